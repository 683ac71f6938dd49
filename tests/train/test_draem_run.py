"""The DRAEM task end to end on the tiny synthetic data: trained through the shared loop, its
results contract, `invoke predict` (score, decision, anomaly-map PNG) and `invoke eval`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from jaxfundus import commands
from jaxfundus.data.labels import DISEASES
from jaxfundus.predict import Predictor
from jaxfundus.report import write_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def draem_run(tiny_data, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("draem")
    commands.train(task="draem", preset="smoke", data_dir=str(tiny_data.data_dir),
                   workdir=str(workdir), log=lambda _: None)
    return workdir


def _fold(workdir: Path) -> Path:
    return workdir / "draem" / "draem" / "fold-0"


def _invoke(*args, workdir):
    return subprocess.run([sys.executable, "-m", "invoke", *args, f"--workdir={workdir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_metrics_hold_the_heldout_evaluation(draem_run, tiny_data):
    fold = _fold(draem_run)
    metrics = json.loads((fold / "metrics.json").read_text())
    predictions = pd.read_csv(fold / "predictions.csv")
    history = pd.read_csv(fold / "history.csv")
    assert {"train_loss", "train_reconstruction", "train_focal", "val_auroc"} <= set(history)
    assert metrics["heldout_diseases"] == ["AMD", "RVO", "Gla", "MH", "AO"]
    assert metrics["synthetic_lesions"] == ["DR", "RD", "RP", "DM"]
    assert (metrics["image_score"], metrics["image_score_k"]) == ("top-k", 5.0)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(predictions.label, predictions.score))
    assert 0 <= metrics["pixel_auroc"] <= 1 and metrics["n_localisation_images"] > 0
    # Per disease: normals against the test images that have it, as scikit-learn counts it.
    labels = pd.read_csv(tiny_data.source_dir / "data.csv").set_index("filename")
    diseases = labels.loc[predictions.filename, list(DISEASES)].to_numpy()
    seen = [DISEASES.index(d) for d in metrics["synthetic_lesions"]]
    assert not diseases[:, seen].any()  # the test split holds no lesion type it trained on
    normal = predictions.label.to_numpy() == 0
    assert set(metrics["auroc_per_disease"]) == {
        d for i, d in enumerate(DISEASES) if diseases[:, i].any()}
    for disease, value in metrics["auroc_per_disease"].items():
        keep = normal | (diseases[:, DISEASES.index(disease)] == 1)
        assert value == pytest.approx(roc_auc_score(~normal[keep], predictions.score[keep]))
    assert (fold / "reconstructions.png").stat().st_size > 10_000


def test_predict_gives_score_decision_and_an_anomaly_map(draem_run, tiny_data, tmp_path):
    photo = tiny_data.source_dir / "img" / pd.read_csv(tiny_data.source_dir / "data.csv")[
        "filename"].iloc[0]
    result = _invoke("predict", "--task=draem", f"--image={photo}", "--json",
                     f"--out={tmp_path / 'maps'}", workdir=draem_run)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    record = json.loads(line)
    assert np.isfinite(record["score"]) and np.isfinite(record["threshold"])
    assert record["anomalous"] == (record["score"] >= record["threshold"])
    picture = Path(record["anomaly_map"])
    assert picture == tmp_path / "maps" / f"{photo.stem}_anomaly_map.png"
    with Image.open(picture) as image:
        assert image.size == (512, 256) and image.mode == "RGB"
    # Without --out the maps go beside the run.
    assert Predictor(draem_run, "draem").out == draem_run / "draem" / "draem" / "anomaly-maps"


def test_eval_rescores_the_best_checkpoint_identically(draem_run, tmp_path):
    workdir = tmp_path / "runs"
    shutil.copytree(draem_run, workdir)
    metrics_path = _fold(workdir) / "metrics.json"
    before = json.loads(metrics_path.read_text())
    metrics_path.unlink()
    result = _invoke("eval", "--task=draem", workdir=workdir)
    assert result.returncode == 0, result.stderr
    after = json.loads(metrics_path.read_text())
    for name in ("auroc", "pixel_auroc", "threshold", "auroc_per_disease", "heldout_diseases"):
        assert after[name] == pytest.approx(before[name]), name


def test_report_shows_the_image_score_localisation_and_heldout_aurocs(draem_run, tmp_path):
    workdir = tmp_path / "runs"
    shutil.copytree(draem_run, workdir)  # the report is written into the workdir
    metrics = json.loads((workdir / "draem" / "draem" / "fold-0" / "metrics.json").read_text())
    page = write_report(workdir).read_text()
    section = page.split('<section id="anomaly">', 1)[1].split("</section>", 1)[0]
    per_disease = ", ".join(f"{name} {value:.3f}"
                            for name, value in metrics["auroc_per_disease"].items())
    cells = ["draem / draem", "0", "patients", "top 5% of the map, sigma 1 px",
             f"{metrics['auroc']:.3f}",
             f"{metrics['pixel_auroc']:.3f} ({metrics['n_localisation_images']})",
             "DR, RD, RP, DM", "AMD, RVO, Gla, MH, AO", per_disease]
    assert "".join(f"<td>{cell}</td>" for cell in cells) in section
