"""`invoke compare`: the paired AUROC difference of two models on the same test images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from jaxfundus import commands, runs
from jaxfundus.config import ConfigError, load_task
from jaxfundus.evaluate.comparison import compare_predictions
from jaxfundus.evaluate.results import supervised_results
from jaxfundus.methods.kinds import kind_of

REPO = Path(__file__).resolve().parents[2]


def _test_split(task: str, fold: int, n: int = 80) -> tuple[pd.DataFrame, np.ndarray]:
    """The same test images and labels for every model of a task (as one seed's split)."""
    rng = np.random.default_rng(100 + fold)
    frame = pd.DataFrame({"filename": [f"{task}_{fold}_{i:03d}.jpg" for i in range(n)],
                          "patient_id": [f"{fold}{i // 2:03d}" for i in range(n)]})
    frame["label"] = rng.integers(0, len(load_task(task).classes), n)
    return frame, frame["label"].to_numpy()


def _probs(labels: np.ndarray, n_classes: int, signal: float, seed: int) -> np.ndarray:
    logits = (np.random.default_rng(seed).normal(size=(labels.size, n_classes))
              + signal * np.eye(n_classes)[labels])
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _write_run(workdir: Path, task: str, model: str, signal: float, seed: int) -> None:
    spec = load_task(task)
    for fold in runs.fold_numbers(spec):
        frame, labels = _test_split(task, fold)
        predictions, metrics = supervised_results(
            frame, _probs(labels, len(spec.classes), signal, seed + fold), spec.classes,
            multi_label=False)
        directory = runs.fold_directory(workdir, task, model, fold)
        runs.write_fold_config(directory, {"seed": 0})
        runs.write_fold_results(directory, predictions, metrics)


@pytest.mark.slow  # a fresh interpreter through invoke
def test_invoke_compare_on_identical_predictions_gives_zero_and_p_one(tmp_path):
    for model in ("simple-cnn", "resnet50"):
        _write_run(tmp_path, "binary", model, signal=1.0, seed=1)  # same seed: same files
    a, b = (runs.fold_directory(tmp_path, "binary", m, 0) / runs.PREDICTIONS
            for m in ("simple-cnn", "resnet50"))
    assert a.read_bytes() == b.read_bytes()
    result = subprocess.run([sys.executable, "-m", "invoke", "compare", "--task=binary",
                             f"--workdir={tmp_path}", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    record = json.loads(line)
    assert (record["model_a"], record["model_b"]) == ("simple-cnn", "resnet50")
    assert record["metric"] == "auroc" and record["positive"] == "abnormal"
    assert record["difference"] == 0.0 and record["difference_ci"] == [0.0, 0.0]
    assert record["p_value"] == 1.0
    assert record["n_images"] == 80 and record["n_patients"] == 40


def test_a_better_model_shows_a_positive_difference_with_delong_p(tmp_path):
    _write_run(tmp_path, "binary", "resnet50", signal=2.5, seed=1)
    _write_run(tmp_path, "binary", "simple-cnn", signal=0.2, seed=2)
    [record] = commands.compare(task="binary", workdir=str(tmp_path), log=lambda _: None)
    a, b = (runs.read_fold(tmp_path, "binary", m, 0).predictions()
            for m in ("simple-cnn", "resnet50"))
    y = (a["label"] == "abnormal").to_numpy()
    assert record["auroc_a"] == pytest.approx(skm.roc_auc_score(y, a["prob_abnormal"]))
    assert record["auroc_b"] == pytest.approx(skm.roc_auc_score(y, b["prob_abnormal"]))
    assert record["difference"] == pytest.approx(record["auroc_a"] - record["auroc_b"])
    low, high = record["difference_ci"]
    assert low < record["difference"] < high < 0  # simple-cnn is worse, and it shows
    assert record["p_value"] < 0.01


def test_multi_class_compares_pooled_macro_auroc_by_bootstrap_only(tmp_path):
    """three-class is cross-validated: all four folds' test images pooled, macro AUROC, no
    DeLong p-value (a mean of per-class AUROCs has no DeLong variance)."""
    _write_run(tmp_path, "three-class", "resnet50", signal=2.0, seed=1)
    _write_run(tmp_path, "three-class", "inception-v3", signal=2.0, seed=1)
    lines = []
    [same] = commands.compare(task="three-class", workdir=str(tmp_path), log=lines.append)
    assert same["metric"] == "macro_auroc" and same["p_value"] is None
    assert same["n_images"] == 4 * 80
    assert same["difference"] == 0.0 and same["difference_ci"] == [0.0, 0.0]
    assert "no p-value" in lines[0] and "DeLong" in same["note"]
    _write_run(tmp_path, "three-class", "inception-v3", signal=0.3, seed=5)
    [worse] = commands.compare(task="three-class", workdir=str(tmp_path), log=lambda _: None)
    assert (worse["model_a"], worse["model_b"]) == ("inception-v3", "resnet50")  # task order
    pooled = pd.concat(runs.read_fold(tmp_path, "three-class", "resnet50", k).predictions()
                       for k in range(4))
    classes = load_task("three-class").classes
    expected = np.mean([skm.roc_auc_score(pooled["label"] == c, pooled[f"prob_{c}"])
                        for c in classes])
    assert worse["auroc_b"] == pytest.approx(expected)
    assert worse["difference_ci"][1] < 0


def test_different_test_images_are_not_compared(tmp_path):
    spec = load_task("binary")
    frame, labels = _test_split("binary", 0)
    a, _ = supervised_results(frame, _probs(labels, 2, 1.0, 1), spec.classes, multi_label=False)
    b = a.copy()
    b.loc[0, "filename"] = "elsewhere.jpg"
    targets = kind_of(spec).roc_targets(spec.classes)
    with pytest.raises(ValueError, match="not tested on the same images.*"
                       "binary_0_000.jpg only in a's; elsewhere.jpg only in b's"):
        compare_predictions("binary", "a", "b", a, b, targets)
    c = a.copy()
    c.loc[3, "label"] = "normal" if c.loc[3, "label"] == "abnormal" else "abnormal"
    with pytest.raises(ValueError, match=f"{c.loc[3, 'filename']} has different labels"):
        compare_predictions("binary", "a", "c", a, c, targets)


def test_compare_needs_two_trained_models(tmp_path):
    _write_run(tmp_path, "binary", "resnet50", signal=1.0, seed=1)
    with pytest.raises(ConfigError, match="two trained models of binary.*trained: resnet50"):
        commands.compare(task="binary", workdir=str(tmp_path), log=lambda _: None)
