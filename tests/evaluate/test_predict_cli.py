"""`invoke predict` and `invoke eval` on a smoke-trained run, through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from jaxfundus import commands, runs
from jaxfundus.data.datasets import open_dataset
from jaxfundus.data.pipeline import normalize
from jaxfundus.evaluate.calibration import TemperatureScaling
from jaxfundus.evaluate.explanations import (
    CAPTION,
    CELL,
    EXAMPLES_PER_CELL,
    GAP,
    TITLE,
    localisation,
)
from jaxfundus.experiment import plan_folds
from jaxfundus.predict import Predictor
from jaxfundus.report import write_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """three-class (4 folds), simple CNN, calibrated with a validation temperature."""
    workdir = tmp_path_factory.mktemp("runs")
    commands.train(task="three-class", model="simple-cnn", preset="smoke", epochs=1,
                   calibrate=True, data_dir=str(tiny_data.data_dir), workdir=str(workdir),
                   log=lambda _: None)
    return workdir


def _invoke(*args, workdir):
    return subprocess.run([sys.executable, "-m", "invoke", *args, f"--workdir={workdir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _square_photo(path: Path) -> Path:
    """A real-format photograph: square 1411x1411 JPEG, fundus disc on a black border."""
    yy, xx = np.mgrid[:1411, :1411]
    disc = (yy - 705) ** 2 + (xx - 705) ** 2 < 600**2
    image = np.zeros((1411, 1411, 3), np.uint8)
    image[disc] = (200, 90, 40)
    Image.fromarray(image).save(path, quality=90)
    return path


@pytest.mark.slow
def test_predict_scores_real_format_jpegs_and_gives_one_line_errors(trained, tmp_path):
    warnings = []
    failures = commands.predict(task="three-class", model="simple-cnn",
                                image=str(tmp_path / "nope.jpg"), workdir=str(trained),
                                log=lambda _: None, warn=warnings.append)
    assert (failures, len(warnings)) == (1, 1) and "nope.jpg: file is missing" in warnings[0]
    # The command line: one JSON line per good file, one error line per bad one, exit code 1.
    folder = tmp_path / "mixed"
    folder.mkdir()
    _square_photo(folder / "good.jpg")
    (folder / "notes.jpg").write_text("not a photograph")
    mixed = _invoke("predict", "--task=three-class", "--model=simple-cnn", f"--folder={folder}",
                    "--json", workdir=trained)
    assert mixed.returncode != 0 and "Traceback" not in mixed.stderr
    assert "notes.jpg" in mixed.stderr
    [record] = [json.loads(line) for line in mixed.stdout.splitlines()]
    assert record["file"] == str(folder / "good.jpg")
    assert set(record["probabilities"]) == {"normal", "Gla", "DR"}
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["prediction"] in record["probabilities"]


@pytest.mark.slow
def test_eval_rewrites_the_results_from_the_best_checkpoint(early_stopped_run, tmp_path):
    """The run stopped early, so its best checkpoint is not its latest: eval restoring the
    latest would change the predictions."""
    run = early_stopped_run.copy_to(tmp_path)
    before = json.loads((run.fold / runs.METRICS).read_text())
    predictions = pd.read_csv(run.fold / runs.PREDICTIONS)
    for name in (runs.METRICS, runs.PREDICTIONS):
        (run.fold / name).unlink()
    result = _invoke("eval", f"--task={run.task}", f"--model={run.model}", workdir=run.workdir)
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_csv(run.fold / runs.PREDICTIONS), predictions)
    after = json.loads((run.fold / runs.METRICS).read_text())
    for name in ("accuracy", "balanced_accuracy", "macro_auroc", "n_test"):
        assert after[name] == pytest.approx(before[name])


@pytest.mark.slow
def test_unknown_task_is_one_line(tmp_path):
    result = _invoke("train", "--task=nine-class", workdir=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: unknown task 'nine-class'")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_predict_explain_writes_an_overlay_the_size_of_the_photograph(trained, tmp_path):
    photo = tmp_path / "retina.png"
    Image.fromarray(skimage.data.retina()).save(photo)  # a real colour fundus photograph
    out = tmp_path / "maps"
    result = _invoke("predict", "--task=three-class", "--model=simple-cnn", f"--image={photo}",
                     "--explain", f"--out={out}", "--json", workdir=trained)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert list(record["saliency_maps"]) == [record["prediction"]]
    written = Path(record["saliency_maps"][record["prediction"]])
    assert written == out / f"retina_gradcam_{record['prediction']}.png"
    with Image.open(written) as image:
        assert image.format == "PNG" and image.size == (1411, 1411)
        shown = np.asarray(image.convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.int16)
    changed = np.abs(shown - original).max(axis=2) > 8
    assert 0.01 < changed.mean() < 1.0  # the map covers part of the photograph, not all


@pytest.mark.slow
def test_calibrated_run_predicts_with_each_folds_validation_temperature(trained, tmp_path):
    predictor = Predictor(trained, "three-class", "simple-cnn")
    photo = _square_photo(tmp_path / "square.jpg")
    images = normalize(predictor.preprocess(photo)[None], predictor.method.normalization)
    batch = {"image": images, "mask": np.ones(1, bool)}
    calibrated = []
    for state, fold in zip(predictor.states, predictor.folds, strict=True):
        calibration = fold.metrics["calibration"]
        assert calibration["fitted_on"] == "validation"
        assert fold.metrics["ece"] == pytest.approx(calibration["ece_after"])
        logits = np.asarray(jax.jit(predictor.method.eval_step)(state, batch)["logits"])
        calibrated.append(TemperatureScaling.from_dict(calibration).probs(logits)[0])
    prediction = predictor.predict(photo)
    mean = np.mean(calibrated, axis=0)
    np.testing.assert_allclose(list(prediction.probabilities.values()), mean, atol=1e-5)
    assert prediction.prediction == predictor.spec.classes[int(np.argmax(mean))]
    assert {fold.metrics["calibration"]["temperature"] for fold in predictor.folds} != {1.0}


@pytest.mark.slow
def test_training_draws_saliency_grids_and_measures_them_against_lesion_masks(trained, tmp_path):
    workdir = tmp_path / "runs"
    shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns(runs.CHECKPOINTS))
    # One row per class (every class has test images in every fold), 2 right + 2 wrong cells.
    grid_size = (2 * EXAMPLES_PER_CELL * (CELL + GAP) + GAP, TITLE + 3 * (CAPTION + CELL + GAP))
    for fold in range(4):
        directory = runs.fold_directory(workdir, "three-class", "simple-cnn", fold)
        with Image.open(directory / runs.SALIENCY) as grid:
            assert grid.size == grid_size
        metrics = json.loads((directory / runs.METRICS).read_text())
        auroc, counts = metrics["saliency_pixel_auroc"], metrics["n_saliency_images"]
        assert set(auroc) == {"normal", "Gla", "DR"}
        assert auroc["normal"] is None  # normal images have no lesion pixels
        for disease in ("Gla", "DR"):
            assert counts[disease] > 0 and auroc[disease] is not None
    # The stored values are the Grad-CAM pixel AUROC of the fold's best checkpoint against the
    # lesion masks of its test images (saliency_pixel_auroc is checked against scikit-learn in
    # test_saliency.py), recomputed here for fold 0.
    predictor = Predictor(trained, "three-class", "simple-cnn")
    config = predictor.config
    dataset = open_dataset(config.data_dir, config.image_size, log=lambda _: None)
    test = plan_folds(predictor.spec, config, dataset)[0].frame("test")
    truth = np.eye(3, dtype=bool)[test["label"].to_numpy()]
    recomputed = localisation(predictor.method.explainer(predictor.states[0]), dataset, test,
                              truth, predictor.spec.classes, config.image_size,
                              predictor.method.normalization)
    fold0 = predictor.folds[0].metrics
    assert recomputed["n_saliency_images"] == fold0["n_saliency_images"]
    for name, value in fold0["saliency_pixel_auroc"].items():
        assert recomputed["saliency_pixel_auroc"][name] == pytest.approx(value, abs=1e-6)
    page = write_report(workdir).read_text()
    section = page.split('<section id="saliency">', 1)[1].split("</section>", 1)[0]
    assert "three-class / simple-cnn, fold-0: test images and their Grad-CAM maps" in section
    assert section.count("<img") == 1 and "three-class / simple-cnn</td><td>DR" in section
