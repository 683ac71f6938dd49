"""Cross-check our numpy metrics against scikit-learn on random, tied and degenerate inputs."""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxfundus import metrics

SEEDS = range(30)


def random_binary_case(seed: int):
    """Labels with both classes and scores; even seeds round scores so many ties occur."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    rng.shuffle(y)
    score = rng.normal(size=n) + y * rng.uniform(0, 2)
    if seed % 2 == 0:
        score = np.round(score, 1)
    return y, score


@pytest.mark.parametrize("seed", SEEDS)
def test_ranking_metrics_match_sklearn(seed):
    y, score = random_binary_case(seed)
    assert metrics.roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert metrics.average_precision(y, score) == pytest.approx(
        skm.average_precision_score(y, score), abs=1e-12
    )
    fpr, tpr, thr = metrics.roc_curve(y, score)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)


@pytest.mark.parametrize("seed", SEEDS)
def test_thresholded_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, n_classes = int(rng.integers(1, 60)), int(rng.integers(2, 10))
    y_true = rng.integers(0, n_classes, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, n_classes, n))
    labels = list(range(n_classes))
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred, n_classes),
        skm.confusion_matrix(y_true, y_pred, labels=labels),
    )
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when y_pred has classes absent from y_true
        expected = skm.balanced_accuracy_score(y_true, y_pred)
    assert metrics.balanced_accuracy(y_true, y_pred, n_classes) == pytest.approx(expected)
    y_bin, pred_bin = (y_true == 0).astype(int), (y_pred == 0).astype(int)
    assert metrics.f1_score(y_bin, pred_bin) == pytest.approx(
        skm.f1_score(y_bin, pred_bin, zero_division=0.0)
    )


def test_balanced_accuracy_skips_classes_absent_from_y_true():
    # Class 2 is never true: mean recall over classes 0 and 1 only -> (1/2 + 1) / 2.
    assert metrics.balanced_accuracy([0, 0, 1, 1], [0, 2, 1, 1], 3) == 0.75
    assert metrics.confusion_matrix([0, 0, 1, 1], [0, 2, 1, 1], 4).shape == (4, 4)


def test_auroc_ties_count_half():
    assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert metrics.roc_auc([0, 1], [0.3, 0.3]) == 0.5
    assert metrics.roc_auc([0, 0, 1], [0.1, 0.7, 0.7]) == 0.75


def test_one_class_splits_are_undefined_not_errors():
    with pytest.warns(RuntimeWarning, match="AUROC undefined: 0 positives"):
        assert math.isnan(metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))
    assert metrics.average_precision([1, 1], [0.1, 0.2]) == 1.0
    fpr, tpr, _ = metrics.roc_curve([1, 1], [0.1, 0.2])
    assert np.isnan(fpr).all() and not np.isnan(tpr).any()
    assert math.isnan(metrics.sensitivity_at_specificity([1, 1], [0.1, 0.2], 0.9))
    assert metrics.f1_score([0, 0], [0, 0]) == 0.0


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError):
        metrics.confusion_matrix([0, 3], [0, 1], 3)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_at_specificity_is_brute_force_optimum(seed, target):
    y, score = random_binary_case(seed)
    best = 0.0  # the "predict nothing" threshold always reaches any specificity
    for t in np.unique(score):
        pred = score >= t
        specificity = np.sum(~pred & (y == 0)) / np.sum(y == 0)
        if specificity >= target - 1e-12:
            best = max(best, np.sum(pred & (y == 1)) / np.sum(y == 1))
    assert metrics.sensitivity_at_specificity(y, score, target) == pytest.approx(best)


def test_sensitivity_at_specificity_hits_exact_target():
    # 10 negatives: one false positive gives specificity exactly 0.9, which is eligible.
    y = np.r_[np.zeros(10, int), np.ones(2, int)]
    score = np.r_[np.arange(10) / 10, 0.95, 0.85]
    assert metrics.sensitivity_at_specificity(y, score, 0.9) == 1.0
    assert metrics.sensitivity_at_specificity(y, score, 0.95) == 0.5


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(10))
def test_single_label_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = 10
    labels = np.r_[np.arange(n_classes), rng.integers(0, n_classes, 50)]
    probs = softmax(rng.normal(size=(labels.size, n_classes)) + 2 * np.eye(n_classes)[labels])
    classes = [f"c{i}" for i in range(n_classes)]
    out = metrics.single_label_metrics(labels, probs, classes)
    preds = probs.argmax(axis=1)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert out["macro_auroc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    assert out["confusion_matrix"] == skm.confusion_matrix(labels, preds).tolist()
    assert out["n_test"] == labels.size and out["classes"] == classes
    json.dumps(out, allow_nan=False)


def test_single_label_metrics_with_a_class_absent_and_baselines():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 3])  # class 2 absent from this split
    probs = softmax(rng.normal(size=(6, 4)))
    out = metrics.single_label_metrics(labels, probs, ["a", "b", "c", "d"])
    per_class = [skm.roc_auc_score(labels == c, probs[:, c]) for c in (0, 1, 3)]
    assert out["macro_auroc"] == pytest.approx(np.mean(per_class))
    assert out["baseline_majority_accuracy"] == 0.5
    assert out["baseline_majority_balanced_accuracy"] == pytest.approx(1 / 3)
    assert len(out["confusion_matrix"]) == 4
    json.dumps(out, allow_nan=False)


def test_single_label_binary_auroc_and_one_class_split():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = metrics.single_label_metrics(labels, probs, ["normal", "disease"])
    assert out["macro_auroc"] == skm.roc_auc_score(labels, probs[:, 1])
    out = metrics.single_label_metrics(np.array([1, 1]), probs[:2], ["normal", "disease"])
    assert out["macro_auroc"] is None
    json.dumps(out, allow_nan=False)


def test_top1_rule_on_hand_made_rows():
    classes = ["AMD", "RVO", "Gla"]
    labels = np.array(
        [
            [0, 0, 0],  # normal; P(normal) = 0.9*0.9*0.9 = 0.729 wins -> correct
            [0, 0, 0],  # normal; AMD 0.8 beats P(normal) = 0.2*0.9*0.9 -> wrong
            [1, 1, 0],  # AMD + RVO; argmax RVO is one of the true classes -> correct
            [0, 0, 1],  # Gla; Gla 0.5 beats P(normal) = 0.6*0.6*0.5 -> correct
            [1, 0, 0],  # AMD; P(normal) = 0.729 wins -> wrong
        ]
    )
    probs = np.array(
        [
            [0.1, 0.1, 0.1],
            [0.8, 0.1, 0.1],
            [0.6, 0.7, 0.1],
            [0.4, 0.4, 0.5],
            [0.1, 0.1, 0.1],
        ]
    )
    scores = metrics.top1_class_scores(probs)
    assert scores[0, 0] == pytest.approx(0.729)
    np.testing.assert_array_equal(scores.argmax(axis=1), [0, 1, 2, 3, 0])
    out = metrics.multi_label_metrics(labels, probs, classes)
    assert out["top1_accuracy"] == pytest.approx(3 / 5)
    # Exact match at p >= 0.5: rows 0, 2 and 3 reproduce their label rows.
    assert out["exact_match_accuracy"] == pytest.approx(3 / 5)
    assert out["n_test"] == 5


def test_multi_label_auroc_skips_classes_without_both_outcomes():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (30, 3))
    labels[:, 2] = 0  # Gla absent from this split
    probs = rng.random((30, 3))
    out = metrics.multi_label_metrics(labels, probs, ["AMD", "RVO", "Gla"])
    assert out["auroc"]["Gla"] is None
    for d, name in enumerate(["AMD", "RVO"]):
        assert out["auroc"][name] == pytest.approx(skm.roc_auc_score(labels[:, d], probs[:, d]))
    assert out["macro_auroc"] == pytest.approx((out["auroc"]["AMD"] + out["auroc"]["RVO"]) / 2)
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("seed", range(10))
def test_anomaly_metrics_match_sklearn(seed):
    y, score = random_binary_case(seed)
    threshold = float(np.median(score))
    out = metrics.anomaly_metrics(y, score, threshold)
    pred = (score >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert out["auprc"] == pytest.approx(skm.average_precision_score(y, score))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0.0))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert out["specificity"] == pytest.approx(tn / (tn + fp))
    assert out["n_anomalous"] == y.sum() and out["n_normal"] == (y == 0).sum()
    assert out["n_test"] == y.size and out["threshold"] == threshold
    assert out["baseline_all_anomalous"]["accuracy"] == pytest.approx(y.mean())
    assert out["baseline_all_anomalous"]["f1"] == pytest.approx(skm.f1_score(y, np.ones_like(y)))
    assert out["sensitivity_at_95_specificity"] <= out["sensitivity_at_90_specificity"]
    json.dumps(out, allow_nan=False)


def test_anomaly_metrics_without_anomalies_is_json_safe():
    out = metrics.anomaly_metrics([0, 0, 0], [0.1, 0.5, 0.9], 0.5)
    assert out["auroc"] is None and out["auprc"] is None and out["sensitivity"] is None
    assert out["sensitivity_at_90_specificity"] is None
    assert out["specificity"] == pytest.approx(1 / 3)
    json.dumps(out, allow_nan=False)
