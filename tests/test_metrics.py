"""Our policy on top of sklearn.metrics (undefined -> None/NaN, macro over present classes,
baselines, multi-label top-1, anomaly operating points) on hand-made cases with known answers,
plus cross-checks that the dict values are sklearn's on the same arrays."""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxfundus import metrics


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


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_roc_auc_is_nan_with_a_warning_when_one_class_is_missing():
    with pytest.warns(RuntimeWarning, match="AUROC undefined: 0 positives and 3 negatives"):
        assert math.isnan(metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.warns(RuntimeWarning, match="AUROC undefined: 2 positives and 0 negatives"):
        assert math.isnan(metrics.roc_auc([1, 1], [0.1, 0.2]))
    # Defined case: 3 of the 4 (positive, negative) pairs ranked right, the tied one counts 1/2.
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.7, 0.7, 0.9]) == 0.875


def test_invalid_inputs_raise_one_line_errors():
    with pytest.raises(ValueError, match="binary labels must be 0 or 1"):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores must be finite"):
        metrics.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match=r"expected scores of shape \(2,\)"):
        metrics.anomaly_metrics([0, 1], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 3\)"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match=r"probs must be \[N, 2\]"):
        metrics.single_label_metrics([0, 1], np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="label_matrix must hold 0 or 1"):
        metrics.multi_label_metrics([[0, 2]], [[0.1, 0.2]], ["a", "b"])


def test_confusion_matrix_has_a_row_and_column_for_every_class():
    np.testing.assert_array_equal(
        metrics.confusion_matrix([0, 0, 1, 1], [0, 2, 1, 1], 4),
        [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    )


def test_single_label_macro_over_present_classes_and_majority_baselines():
    labels = np.array([0, 0, 1, 1, 3, 3])  # class 2 never true in this split
    probs = np.array(
        [
            [0.7, 0.2, 0.0, 0.1],
            [0.6, 0.2, 0.0, 0.2],
            [0.1, 0.05, 0.55, 0.3],
            [0.2, 0.05, 0.45, 0.3],
            [0.1, 0.2, 0.1, 0.6],
            [0.2, 0.2, 0.0, 0.6],
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # predicting the absent class 2 is not worth a warning
        out = metrics.single_label_metrics(labels, probs, ["a", "b", "c", "d"])
    # One-vs-rest AUROCs of the present classes: a 1.0, b 0.0, d 1.0; c is skipped, not 0 or 0.5.
    assert out["macro_auroc"] == pytest.approx(2 / 3)
    # Predictions 0, 0, 2, 2, 3, 3: recall 1, 0, 1 over present classes 0, 1, 3.
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx(2 / 3)
    assert out["confusion_matrix"] == [[2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0], [0, 0, 0, 2]]
    # Classes 0, 1 and 3 tie for the majority; the lowest id, 0, is the baseline's prediction.
    assert out["baseline_majority_accuracy"] == pytest.approx(1 / 3)
    assert out["baseline_majority_balanced_accuracy"] == pytest.approx(1 / 3)
    assert out["classes"] == ["a", "b", "c", "d"] and out["n_test"] == 6
    json.dumps(out, allow_nan=False)


def test_single_label_binary_auroc_is_class_1_and_none_on_a_one_class_split():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = metrics.single_label_metrics(labels, probs, ["normal", "disease"])
    assert out["macro_auroc"] == 0.75  # positives 0.8, 0.4 against negatives 0.1, 0.7
    out = metrics.single_label_metrics(np.array([1, 1]), probs[:2], ["normal", "disease"])
    assert out["macro_auroc"] is None
    assert out["balanced_accuracy"] == 0.5 and out["baseline_majority_balanced_accuracy"] == 1.0
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


def test_multi_label_auroc_is_none_for_one_outcome_classes_and_macro_skips_them():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # no Gla in this split
    probs = np.array([[0.9, 0.9, 0.1], [0.1, 0.1, 0.2], [0.8, 0.2, 0.3], [0.2, 0.8, 0.4]])
    out = metrics.multi_label_metrics(labels, probs, ["AMD", "RVO", "Gla"])
    assert out["auroc"] == {"AMD": 1.0, "RVO": 0.0, "Gla": None}
    assert out["macro_auroc"] == 0.5
    json.dumps(out, allow_nan=False)
    out = metrics.multi_label_metrics(np.zeros((2, 3), int), probs[:2], ["AMD", "RVO", "Gla"])
    assert out["auroc"] == {"AMD": None, "RVO": None, "Gla": None}
    assert out["macro_auroc"] is None
    json.dumps(out, allow_nan=False)


def test_anomaly_metrics_on_a_hand_made_split():
    y = np.array([0, 0, 0, 0, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    out = metrics.anomaly_metrics(y, score, threshold=0.5)  # predicts 0, 0, 0, 1, 1, 1
    assert out["auroc"] == 0.875  # 7 of 8 (anomalous, normal) pairs ranked right
    assert out["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # hits at ranks 1 and 3
    assert out["accuracy"] == pytest.approx(5 / 6)
    assert out["f1"] == pytest.approx(0.8)  # tp 2, fp 1, fn 0
    assert out["sensitivity"] == 1.0 and out["specificity"] == 0.75
    assert out["balanced_accuracy"] == pytest.approx(0.875)
    # Specificity >= 0.9 with 4 normals allows no false positive: only the 0.9 anomaly is found.
    assert out["sensitivity_at_90_specificity"] == 0.5
    assert out["sensitivity_at_95_specificity"] == 0.5
    assert out["baseline_all_anomalous"] == {"accuracy": pytest.approx(1 / 3), "f1": 0.5}
    assert (out["threshold"], out["n_test"], out["n_anomalous"], out["n_normal"]) == (0.5, 6, 2, 4)
    json.dumps(out, allow_nan=False)


def test_anomaly_metrics_without_anomalies_are_none_not_sklearns_zero():
    out = metrics.anomaly_metrics([0, 0, 0], [0.1, 0.5, 0.9], 0.5)
    assert out["auroc"] is None and out["sensitivity"] is None
    assert out["auprc"] is None  # sklearn's average_precision_score says 0.0 here
    assert out["sensitivity_at_90_specificity"] is None
    assert out["sensitivity_at_95_specificity"] is None
    assert out["specificity"] == pytest.approx(1 / 3)
    assert out["f1"] == 0.0 and out["baseline_all_anomalous"]["f1"] == 0.0
    json.dumps(out, allow_nan=False)


def test_anomaly_metrics_without_normals():
    out = metrics.anomaly_metrics([1, 1], [0.1, 0.9], 0.5)
    assert out["auroc"] is None and out["specificity"] is None
    assert out["sensitivity_at_90_specificity"] is None
    assert out["auprc"] == 1.0 and out["sensitivity"] == 0.5
    json.dumps(out, allow_nan=False)


def test_sensitivity_at_specificity_is_nan_with_one_class():
    assert math.isnan(metrics.sensitivity_at_specificity([1, 1], [0.1, 0.2], 0.9))
    assert math.isnan(metrics.sensitivity_at_specificity([0, 0], [0.1, 0.2], 0.9))


def test_sensitivity_at_specificity_hits_exact_target():
    # 10 negatives: one false positive gives specificity exactly 0.9, which is eligible.
    y = np.r_[np.zeros(10, int), np.ones(2, int)]
    score = np.r_[np.arange(10) / 10, 0.95, 0.85]
    assert metrics.sensitivity_at_specificity(y, score, 0.9) == 1.0
    assert metrics.sensitivity_at_specificity(y, score, 0.95) == 0.5


@pytest.mark.parametrize("seed", range(10))
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


@pytest.mark.parametrize("seed", range(5))
def test_single_label_dict_is_sklearn_on_the_same_arrays(seed):
    rng = np.random.default_rng(seed)
    n_classes = 10
    labels = np.r_[np.arange(n_classes), rng.integers(0, n_classes, 50)]
    probs = softmax(rng.normal(size=(labels.size, n_classes)) + 2 * np.eye(n_classes)[labels])
    out = metrics.single_label_metrics(labels, probs, [f"c{i}" for i in range(n_classes)])
    preds = probs.argmax(axis=1)
    assert out["accuracy"] == skm.accuracy_score(labels, preds)
    assert out["balanced_accuracy"] == skm.balanced_accuracy_score(labels, preds)
    assert out["macro_auroc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert out["confusion_matrix"] == skm.confusion_matrix(labels, preds).tolist()
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("seed", range(5))
def test_multi_label_dict_is_sklearn_on_the_same_arrays(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (40, 4))
    labels[:2] = [[0, 0, 0, 0], [1, 1, 1, 1]]  # every class has both outcomes
    probs = np.round(rng.random((40, 4)), 1)  # ties
    out = metrics.multi_label_metrics(labels, probs, ["a", "b", "c", "d"])
    assert list(out["auroc"].values()) == [
        skm.roc_auc_score(labels[:, d], probs[:, d]) for d in range(4)
    ]
    assert out["macro_auroc"] == pytest.approx(skm.roc_auc_score(labels, probs, average="macro"))
    assert out["exact_match_accuracy"] == skm.accuracy_score(labels, probs >= 0.5)


@pytest.mark.parametrize("seed", range(10))
def test_anomaly_dict_is_sklearn_on_the_same_arrays(seed):
    y, score = random_binary_case(seed)
    threshold = float(np.median(score))
    out = metrics.anomaly_metrics(y, score, threshold)
    pred = (score >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert out["auroc"] == skm.roc_auc_score(y, score)
    assert out["auprc"] == skm.average_precision_score(y, score)
    assert out["accuracy"] == skm.accuracy_score(y, pred)
    assert out["f1"] == skm.f1_score(y, pred)
    assert out["balanced_accuracy"] == skm.balanced_accuracy_score(y, pred)
    assert out["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert out["specificity"] == pytest.approx(tn / (tn + fp))
    assert out["baseline_all_anomalous"]["f1"] == skm.f1_score(y, np.ones_like(y))
    assert out["sensitivity_at_95_specificity"] <= out["sensitivity_at_90_specificity"]
    json.dumps(out, allow_nan=False)
