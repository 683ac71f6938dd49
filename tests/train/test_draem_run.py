"""The DRAEM task end to end on the tiny synthetic data: trained through the shared loop, its
results contract, `invoke predict` (score, decision, anomaly-map PNG), `invoke eval`, and a run
killed mid-training that resumes to the same predictions. One file, so that one test process
trains conftest's draem_run (the resume test's uninterrupted reference) and compiles its
programs once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import kill_after_checkpoint
from PIL import Image
from sklearn.metrics import roc_auc_score

from jaxfundus import commands, runs
from jaxfundus.data.labels import DISEASES
from jaxfundus.predict import Predictor
from jaxfundus.report import write_report

pytestmark = pytest.mark.slow  # every test reads conftest's trained DRAEM run


def test_metrics_hold_the_heldout_evaluation(draem_run, tiny_data):
    fold = draem_run.fold
    metrics = json.loads((fold / "metrics.json").read_text())
    predictions = pd.read_csv(fold / "predictions.csv")
    history = pd.read_csv(fold / "history.csv")
    assert {"train_loss", "train_reconstruction", "train_focal", "val_auroc"} <= set(history)
    assert metrics["heldout_diseases"] == ["AMD", "RVO", "Gla", "MH", "AO"]
    assert metrics["synthetic_lesions"] == ["DR", "RD", "RP", "DM"]
    assert metrics["validation_diseases"] == ["AMD", "RVO", "Gla", "MH", "AO"]
    assert (metrics["image_score"], metrics["image_score_sigma"]) == ("max", 1.0)
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
    with Image.open(fold / "reconstructions.png") as grid:
        # 3 panels of 180 px (input, reconstruction, map) per row: normal and >= 1 disease
        assert grid.width == 3 * 180 and grid.height % 180 == 0 and grid.height >= 2 * 180


def test_predict_gives_score_decision_and_an_anomaly_map(draem_run, tiny_data, tmp_path):
    photo = tiny_data.source_dir / "img" / pd.read_csv(tiny_data.source_dir / "data.csv")[
        "filename"].iloc[0]
    lines, warnings = [], []
    failures = commands.predict(task="draem", image=str(photo), as_json=True,
                                out=str(tmp_path / "maps"), workdir=str(draem_run.workdir),
                                log=lines.append, warn=warnings.append)
    assert (failures, warnings) == (0, [])
    [record] = [json.loads(line) for line in lines]
    assert np.isfinite(record["score"]) and np.isfinite(record["threshold"])
    assert record["anomalous"] == (record["score"] >= record["threshold"])
    picture = Path(record["anomaly_map"])
    assert picture == tmp_path / "maps" / f"{photo.stem}_anomaly_map.png"
    with Image.open(picture) as image:
        assert image.size == (512, 256) and image.mode == "RGB"
    # Without --out the maps go beside the run.
    assert Predictor(draem_run.workdir, "draem").out == draem_run.fold.parent / "anomaly-maps"


def test_eval_rescores_the_best_checkpoint_identically(draem_run, tmp_path):
    run = draem_run.copy_to(tmp_path)
    metrics_path = run.fold / "metrics.json"
    before = json.loads(metrics_path.read_text())
    metrics_path.unlink()
    commands.evaluate(task="draem", workdir=str(run.workdir), log=lambda _: None)
    after = json.loads(metrics_path.read_text())
    for name in ("auroc", "pixel_auroc", "threshold", "auroc_per_disease", "heldout_diseases"):
        assert after[name] == pytest.approx(before[name]), name


def test_report_shows_the_image_score_localisation_and_heldout_aurocs(draem_run, tmp_path):
    run = draem_run.copy_to(tmp_path)  # the report is written into the workdir
    workdir = run.workdir
    metrics = json.loads((run.fold / "metrics.json").read_text())
    page = write_report(workdir).read_text()
    section = page.split('<section id="anomaly">', 1)[1].split("</section>", 1)[0]
    per_disease = ", ".join(f"{name} {value:.3f}"
                            for name, value in metrics["auroc_per_disease"].items())
    cells = ["draem / draem", "0", "patients", "max of the map, sigma 1 px",
             f"{metrics['auroc']:.3f}",
             f"{metrics['pixel_auroc']:.3f} ({metrics['n_localisation_images']})",
             "DR, RD, RP, DM", "AMD, RVO, Gla, MH, AO", "AMD, RVO, Gla, MH, AO",
             per_disease]
    assert "".join(f"<td>{cell}</td>" for cell in cells) in section


KILLED_AT_STEP = 4  # mid-epoch 2 of 3
# The settings of conftest's draem_run, plus a checkpoint every 2 steps; the killed child
# SIGKILLs itself once its step-4 checkpoint is on disk, so every run resumes from that state.
TRAIN_CODE = textwrap.dedent("""
    import sys
    from jaxfundus import commands
    {before}
    commands.train(task="draem", preset="smoke", epochs=3, data_dir=sys.argv[1],
                   workdir=sys.argv[2], checkpoint_every_steps=2,
                   log=lambda line: print(line, flush=True))
""")


def _train(data_dir, workdir, before: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", TRAIN_CODE.format(before=before), str(data_dir),
               str(workdir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_killed_draem_run_resumes_to_identical_predictions(draem_run, tiny_data, tmp_path):
    """Fresh processes, real checkpoints: the synthetic anomalies are seeded by (seed, epoch,
    position), so the resumed run paints exactly what the first one would have."""
    fold = runs.fold_directory(tmp_path, "draem", "draem", 0)
    killed = _train(tiny_data.data_dir, tmp_path, kill_after_checkpoint(KILLED_AT_STEP))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = sorted(int(p.name) for p in (fold / runs.CHECKPOINTS).iterdir() if p.name.isdigit())
    assert saved[-1] == KILLED_AT_STEP and not (fold / runs.METRICS).exists()
    resumed = _train(tiny_data.data_dir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from checkpoint at step {KILLED_AT_STEP}" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_csv(fold / runs.PREDICTIONS),
                                  pd.read_csv(draem_run.fold / runs.PREDICTIONS))
