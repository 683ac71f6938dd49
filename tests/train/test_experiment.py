"""Real smoke trainings through the shared loop on the tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from jaxfundus import commands


def _train(tiny_data, workdir, **kwargs):
    kwargs.setdefault("preset", "smoke")
    return commands.train(data_dir=str(tiny_data.data_dir), workdir=str(workdir),
                          log=lambda _: None, **kwargs)


def test_cross_validated_task_writes_the_results_contract(tiny_data, tmp_path):
    [summary] = _train(tiny_data, tmp_path, task="five-rare", model="simple-cnn")
    assert summary["folds_done"] == summary["folds_expected"] == 4
    tested = []
    for fold in range(4):
        run = tmp_path / "five-rare" / "simple-cnn" / f"fold-{fold}"
        for name in ("history.csv", "split.csv", "predictions.csv", "metrics.json",
                     "config.json"):
            assert (run / name).is_file(), name
        assert any((run / "checkpoints").iterdir())
        split = pd.read_csv(run / "split.csv", dtype={"patient_id": str})
        patients = {s: set(split.patient_id[split.split == s]) for s in ("train", "val", "test")}
        assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
        predictions = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
        tested += predictions.filename.tolist()
        classes = ["AMD", "RVO", "MH", "RD", "RP"]
        probs = predictions[[f"prob_{c}" for c in classes]].to_numpy()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
        metrics = json.loads((run / "metrics.json").read_text())
        labels = predictions.label.map(classes.index).to_numpy()
        preds = predictions.pred.map(classes.index).to_numpy()
        assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, preds))
        assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
        assert metrics["macro_auroc"] == pytest.approx(
            roc_auc_score(labels, probs, multi_class="ovr", labels=range(5)), abs=1e-6)
        config = json.loads((run / "config.json").read_text())
        assert config["data"]["fingerprint"] and config["versions"]["jax"]
        assert len(pd.read_csv(run / "history.csv")) == 2
    assert len(tested) == len(set(tested))  # each image tested in exactly one fold
    means = summary["metrics"]["accuracy"]
    assert means["mean"] == pytest.approx(np.mean(means["per_fold"]))


def test_finished_run_is_not_retrained(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, task="binary", model="simple-cnn")
    metrics = tmp_path / "binary" / "simple-cnn" / "fold-0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    lines = []
    commands.train(task="binary", model="simple-cnn", preset="smoke",
                   data_dir=str(tiny_data.data_dir), workdir=str(tmp_path), log=lines.append)
    assert metrics.stat().st_mtime_ns == before
    assert any("already trained" in line for line in lines)


def test_multi_label_task_scores_each_disease(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, task="ten-class", model="simple-cnn")
    run = tmp_path / "ten-class" / "simple-cnn" / "fold-0"
    predictions = pd.read_csv(run / "predictions.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    aurocs = []
    for disease, value in metrics["auroc"].items():
        labels = predictions[f"label_{disease}"]
        if 0 < labels.sum() < len(labels):
            expected = roc_auc_score(labels, predictions[f"prob_{disease}"])
            assert value == pytest.approx(expected, abs=1e-6)
            aurocs.append(expected)
    assert metrics["macro_auroc"] == pytest.approx(np.mean(aurocs), abs=1e-6)
    assert 0 <= metrics["top1_accuracy"] <= 1 and "exact_match_accuracy" in metrics
