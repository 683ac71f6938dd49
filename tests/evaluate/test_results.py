"""metrics.json from model outputs: every headline metric with its patient-bootstrap interval,
two-class detector metrics equal to scikit-learn, calibration and validation-chosen operating
points; summary.json's pooled out-of-fold intervals."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from jaxfundus import runs
from jaxfundus.config import load_task
from jaxfundus.evaluate import intervals as iv
from jaxfundus.evaluate.calibration import (
    TemperatureScaling,
    expected_calibration_error,
    reliability_diagram,
)
from jaxfundus.evaluate.operating_points import threshold_at_specificity
from jaxfundus.evaluate.results import (
    anomaly_results,
    calibration_fields,
    headline_intervals,
    supervised_results,
)
from jaxfundus.evaluate.thresholds import ScoreNormalizer


def _frame(n: int, seed: int, images_per_patient: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"filename": [f"s{seed}_{i:04d}.jpg" for i in range(n)],
                         "patient_id": [f"{seed}{i // images_per_patient:04d}"
                                        for i in range(n)]})


def _single_label(n: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    frame = _frame(n, seed)
    frame["label"] = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[frame["label"]]
    return frame, logits, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _inside(value: float, interval: list[float] | None) -> bool:
    return interval is not None and interval[0] <= value <= interval[1]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_single_label_metrics_carry_intervals_around_their_estimates(n_classes):
    frame, _, probs = _single_label(150, n_classes, seed=n_classes)
    classes = ("normal", "AMD", "DR")[:n_classes]
    _, metrics = supervised_results(frame, probs, classes, multi_label=False, seed=7)
    names = ["accuracy", "balanced_accuracy", "macro_auroc"]
    if n_classes == 2:
        names += ["auroc", "auprc", "f1", "sensitivity", "specificity"]
    for name in names:
        low, high = metrics[f"{name}_ci"]
        assert low < metrics[name] < high, name
        assert high - low < 0.5, name
    again = supervised_results(frame, probs, classes, multi_label=False, seed=7)[1]
    other_seed = supervised_results(frame, probs, classes, multi_label=False, seed=8)[1]
    assert again["accuracy_ci"] == metrics["accuracy_ci"]
    assert other_seed["accuracy_ci"] != metrics["accuracy_ci"]


def test_two_class_detector_metrics_equal_scikit_learn():
    frame, _, probs = _single_label(120, 2, seed=11)
    _, metrics = supervised_results(frame, probs, ("normal", "RVO"), multi_label=False)
    y, score, pred = frame["label"].to_numpy(), probs[:, 1], probs.argmax(1)
    assert metrics["auroc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert metrics["auroc"] == pytest.approx(metrics["macro_auroc"], abs=1e-12)
    assert metrics["auprc"] == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)
    assert metrics["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert metrics["sensitivity"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
    assert metrics["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0),
                                                   abs=1e-12)


def test_multi_label_intervals_per_class():
    rng = np.random.default_rng(5)
    classes = ("AMD", "DR", "RP")
    frame = _frame(200, 5)
    labels = (rng.random((200, 3)) < 0.3).astype(int)
    for i, name in enumerate(classes):
        frame[f"label_{name}"] = labels[:, i]
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
    _, metrics = supervised_results(frame, probs, classes, multi_label=True)
    for name in ("macro_auroc", "top1_accuracy", "exact_match_accuracy"):
        assert _inside(metrics[name], metrics[f"{name}_ci"]), name
    assert set(metrics["auroc_ci"]) == set(classes)
    for name in classes:
        assert _inside(metrics["auroc"][name], metrics["auroc_ci"][name]), name


def test_a_class_missing_from_the_test_split_has_no_interval():
    frame, _, probs = _single_label(60, 2, seed=3)
    frame["label"] = 0  # every test image normal: AUROC, sensitivity undefined
    _, metrics = supervised_results(frame, probs, ("normal", "MH"), multi_label=False)
    assert metrics["auroc"] is None and metrics["auroc_ci"] is None
    assert metrics["sensitivity"] is None and metrics["sensitivity_ci"] is None
    assert _inside(metrics["accuracy"], metrics["accuracy_ci"])


def test_anomaly_intervals_and_operating_points_chosen_on_validation():
    rng = np.random.default_rng(2)
    frame = _frame(200, 2)
    frame["label"] = (rng.random(200) < 0.6).astype(int)
    val_labels = np.r_[0, 1, (rng.random(80) < 0.5).astype(int)]
    val_scores = rng.normal(size=val_labels.size) + 1.2 * val_labels
    test_scores = rng.normal(size=200) + 1.2 * frame["label"].to_numpy()
    predictions, metrics = anomaly_results(frame, test_scores, val_labels, val_scores,
                                           criterion="f1", manual_threshold=None, seed=3)
    for name in ("auroc", "auprc", "accuracy", "balanced_accuracy", "f1", "sensitivity",
                 "specificity"):
        assert _inside(metrics[name], metrics[f"{name}_ci"]), name
    normalised_val = ScoreNormalizer.from_dict(metrics["normalizer"]).transform(val_scores)
    labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy()
    for point, target in zip(metrics["operating_points"], (0.90, 0.95), strict=True):
        threshold = threshold_at_specificity(val_labels, normalised_val, target)
        assert point["threshold"] == pytest.approx(threshold)
        assert point["val_specificity"] >= target
        flagged = scores >= threshold
        assert point["test_sensitivity"] == pytest.approx(flagged[labels == 1].mean())
        assert point["test_specificity"] == pytest.approx((~flagged[labels == 0]).mean())


def _calibrated_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits float[n, 3], labels drawn from their softmax): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = 1.5 * rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return logits, (rng.random(n)[:, None] > probs.cumsum(1)).sum(1)


def test_calibration_fields_with_and_without_a_temperature():
    frame, logits, probs = _single_label(300, 3, seed=9)
    labels = frame["label"].to_numpy()
    plain = calibration_fields(logits, labels, probs, None)
    assert plain["ece"] == pytest.approx(expected_calibration_error(probs, labels))
    assert plain["reliability"]["count"] == reliability_diagram(probs, labels).count.tolist()
    assert "calibration" not in plain
    # Three times the calibrated logits is over-confident; a temperature fitted on other
    # (validation) images undoes it.
    val_logits, val_labels = _calibrated_logits(2000, seed=1)
    test_logits, test_labels = _calibrated_logits(2000, seed=2)
    scaling = TemperatureScaling.fit(3 * val_logits, val_labels)
    scaled = calibration_fields(3 * test_logits, test_labels, scaling.probs(3 * test_logits),
                                scaling)
    assert scaled["calibration"]["temperature"] == pytest.approx(3.0, rel=0.15)
    assert scaled["calibration"]["ece_after"] == pytest.approx(scaled["ece"])
    assert scaled["calibration"]["ece_before"] > 3 * scaled["ece"]
    assert scaled["calibration"]["reliability_before"]["ece"] == pytest.approx(
        scaled["calibration"]["ece_before"])


def test_summary_pools_the_folds_predictions(tmp_path):
    """Each metric of summary.json: mean/std over folds and its value on all folds' test
    predictions together, with an interval around it."""
    spec = load_task("normal-vs-amd")
    folds = []
    for fold in range(4):
        frame, _, probs = _single_label(50, 2, seed=20 + fold)
        predictions, metrics = supervised_results(frame, probs, spec.classes, multi_label=False)
        directory = runs.fold_directory(tmp_path, spec.name, "resnet50", fold)
        runs.write_fold_config(directory, {"seed": 4})
        runs.write_fold_results(directory, predictions, metrics)
        folds.append((predictions, metrics))
    summary = runs.write_summary(tmp_path, spec, "resnet50", headline_intervals)
    pooled = pd.concat([p for p, _ in folds])
    y = (pooled["label"] == "AMD").to_numpy()
    accuracy = summary["metrics"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(np.mean([m["accuracy"] for _, m in folds]))
    assert accuracy["pooled"] == pytest.approx((pooled["label"] == pooled["pred"]).mean())
    assert summary["metrics"]["auroc"]["pooled"] == pytest.approx(
        skm.roc_auc_score(y, pooled["prob_AMD"]))
    expected = headline_intervals(pooled, spec.classes, seed=4)
    for name, entry in summary["metrics"].items():
        if name in expected:
            assert entry["pooled_ci"] == expected[name].to_json(), name
            assert _inside(entry["pooled"], entry["pooled_ci"]), name
    # The interval of 200 pooled images is narrower than a 50-image fold's.
    fold_width = np.diff(folds[0][1]["accuracy_ci"])[0]
    assert np.diff(accuracy["pooled_ci"])[0] < fold_width


def test_intervals_of_a_large_multi_label_fold_take_about_a_second():
    rng = np.random.default_rng(0)
    classes = tuple(f"d{i}" for i in range(9))
    frame = _frame(1000, 0)
    labels = (rng.random((1000, 9)) < 0.2).astype(int)
    for i, name in enumerate(classes):
        frame[f"label_{name}"] = labels[:, i]
    probs = rng.random((1000, 9))
    start = time.perf_counter()
    headline_intervals(supervised_results(frame, probs, classes, multi_label=True,
                                          n_resamples=10)[0], classes,
                       n_resamples=iv.DEFAULT_RESAMPLES)
    assert time.perf_counter() - start < 3.0
