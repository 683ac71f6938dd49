"""GANomaly and VAE trained through the shared loop on the tiny synthetic dataset."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from jaxfundus import commands
from jaxfundus.anomaly_scores import pool_map
from jaxfundus.data.datasets import open_dataset
from jaxfundus.data.pipeline import normalize, resize
from jaxfundus.evaluate.thresholds import ScoreNormalizer, choose_threshold
from jaxfundus.predict import Predictor

pytestmark = pytest.mark.slow  # every test trains or reads a trained detector


def _train(tiny_data, workdir, model, **kwargs):
    return commands.train(task=model, model=model, preset="smoke",
                          data_dir=str(tiny_data.data_dir), workdir=str(workdir),
                          log=lambda _: None, **kwargs)


def _run(workdir, model):
    run = workdir / model / model / "fold-0"
    return run, json.loads((run / "metrics.json").read_text()), pd.read_csv(run / "predictions.csv")


@pytest.fixture
def vae_workdir(vae_run):
    """The workdir of conftest's shared VAE run (read-only)."""
    return vae_run.workdir


def test_vae_scores_clearly_abnormal_images_above_normals(vae_workdir, tiny_data):
    _, metrics, predictions = _run(vae_workdir, "vae")
    assert list(predictions.columns) == ["filename", "patient_id", "label", "score", "pred"]
    labels = pd.read_csv(tiny_data.source_dir / "data.csv").set_index("filename")
    clear = labels[["RD", "AO", "RP"]].sum(1).loc[predictions.filename].to_numpy() > 0
    normal = predictions.score[predictions.label == 0]
    assert clear.any() and predictions.score[clear].mean() > normal.mean()


def test_metrics_match_scikit_learn_from_predictions(vae_workdir):
    _, metrics, predictions = _run(vae_workdir, "vae")
    y, score, pred = predictions.label, predictions.score, predictions.pred
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, score), abs=1e-9)
    assert metrics["auprc"] == pytest.approx(average_precision_score(y, score), abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert metrics["f1"] == pytest.approx(f1_score(y, pred))
    assert metrics["baseline_all_anomalous"]["accuracy"] == pytest.approx(y.mean())
    assert np.array_equal(pred, (score >= metrics["threshold"]).astype(int))


def test_threshold_comes_from_validation_and_is_applied_unchanged(vae_workdir, tiny_data):
    from jaxfundus.config import load_task, resolve_config
    from jaxfundus.data.datasets import open_dataset
    from jaxfundus.experiment import plan_folds
    from jaxfundus.methods import make_method
    from jaxfundus.train.loop import Trainer
    from jaxfundus.train.mesh import DataParallel

    run, metrics, _ = _run(vae_workdir, "vae")
    assert metrics["threshold_source"] == "validation"
    config = resolve_config("vae", "vae", "smoke", epochs=6, data_dir=str(tiny_data.data_dir))
    dataset = open_dataset(config.data_dir, config.image_size, log=lambda _: None)
    [fold] = plan_folds(load_task("vae"), config, dataset)
    trainer = Trainer(make_method(load_task("vae"), config), config, DataParallel())
    val = fold.data("val")
    state = trainer.restore_best(run)
    val_scores = trainer.predict(state, val)["score"]
    normalizer = ScoreNormalizer.fit(val_scores)
    assert metrics["normalizer"] == pytest.approx(normalizer.to_dict())
    expected = choose_threshold(val.targets, normalizer.transform(val_scores),
                                metrics["threshold_criterion"])
    assert metrics["threshold_criterion"] == "youden"  # conftest's vae_run
    assert metrics["threshold"] == pytest.approx(expected)


def test_manual_threshold_is_honoured_exactly(vae_workdir, tmp_path):
    from jaxfundus.commands import evaluate

    workdir = tmp_path / "runs"  # eval rewrites metrics.json: a copy, not the shared run
    shutil.copytree(vae_workdir, workdir)
    evaluate(task="vae", model="vae", workdir=str(workdir), threshold=0.123456,
             log=lambda _: None)
    _, metrics, predictions = _run(workdir, "vae")
    assert metrics["threshold"] == 0.123456 and metrics["threshold_source"] == "manual"
    assert np.array_equal(predictions.pred, (predictions.score >= 0.123456).astype(int))


def test_reconstructions_and_localisation_are_reported(vae_workdir):
    run, metrics, _ = _run(vae_workdir, "vae")
    with Image.open(run / "reconstructions.png") as grid:
        # 3 panels of 180 px (input, reconstruction, map) per row: normal and >= 1 disease
        assert grid.width == 3 * 180 and grid.height % 180 == 0 and grid.height >= 2 * 180
    # The smoothed |x - x'| map finds the painted lesions better than chance
    assert metrics["n_localisation_images"] > 0 and metrics["pixel_auroc"] > 0.6, metrics


def test_ganomaly_trains_through_the_shared_loop(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, "ganomaly", epochs=2)
    run, metrics, predictions = _run(tmp_path, "ganomaly")
    history = pd.read_csv(run / "history.csv")
    assert {"train_loss", "train_disc_loss", "val_auroc"} <= set(history.columns)
    assert np.isfinite(predictions.score).all()
    assert metrics["auroc"] == pytest.approx(roc_auc_score(predictions.label, predictions.score))
    assert (run / "reconstructions.png").is_file()



def test_image_score_is_recorded_and_honoured(vae_workdir, tiny_data):
    """predictions.csv holds the task's pooling (vae.toml: max) of the method's anomaly maps, on
    the validation-fitted scale, and metrics.json says which pooling it was."""
    run, metrics, predictions = _run(vae_workdir, "vae")
    assert (metrics["image_score"], metrics["image_score_sigma"]) == ("max", 1.0)
    predictor = Predictor(vae_workdir, "vae")
    method, [state] = predictor.method, predictor.states
    dataset = open_dataset(tiny_data.data_dir, 32, log=lambda _: None)
    rows = dataset.index.set_index("filename").loc[predictions.filename, "index"]
    images = np.stack([resize(np.asarray(dataset.source[int(i)]["image"]), 32) for i in rows])
    maps = method.anomaly_maps(state, jnp.asarray(normalize(images, "tanh")))
    normalizer = ScoreNormalizer.from_dict(metrics["normalizer"])
    pooled = {name: normalizer.transform(np.asarray(pool_map(maps, name, sigma=1.0)))
              for name in ("max", "mean")}
    np.testing.assert_allclose(predictions.score, pooled["max"], rtol=1e-4, atol=1e-5)
    assert np.abs(predictions.score - pooled["mean"]).max() > 0.1  # another pooling differs
