"""Thresholds at a fixed specificity are the validation optimum, applied unchanged to test."""

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from jaxfundus.evaluate.operating_points import operating_points, threshold_at_specificity


def case(seed: int, n: int = 80):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    score = rng.normal(size=n) + y
    if seed % 2 == 0:
        score = np.round(score, 1)  # ties
    return y, score


def rates(y, score, t):
    tn, fp, fn, tp = confusion_matrix(y, score >= t, labels=[0, 1]).ravel()
    return tp / (tp + fn), tn / (tn + fp)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("target", [0.90, 0.95])
def test_threshold_is_the_most_sensitive_cut_reaching_the_target(seed, target):
    y, score = case(seed)
    t = threshold_at_specificity(y, score, target)
    sensitivity, specificity = rates(y, score, t)
    assert specificity >= target
    # Brute force over every cut: each distinct score and one value above the maximum.
    for cut in np.r_[np.unique(score), score.max() + 1]:
        cut_sensitivity, cut_specificity = rates(y, score, cut)
        if cut_specificity >= target:
            assert cut_sensitivity <= sensitivity


def test_threshold_sits_between_scores_and_reaches_the_target_exactly():
    # 30 negatives at 0..29: 90% specificity is exactly 27 true negatives (0..26), so the cut
    # goes midway between 26 and the positive at 26.5, which it flags.
    negatives, positives = np.arange(30.0), np.array([26.5, 40.0, 50.0])
    y = np.r_[np.zeros(30, int), np.ones(3, int)]
    score = np.r_[negatives, positives]
    assert threshold_at_specificity(y, score, 0.90) == pytest.approx(26.25)
    assert rates(y, score, 26.25) == pytest.approx((1.0, 0.9))
    # 100% specificity needs a cut above the top negative: midway to the next positive.
    assert threshold_at_specificity(y, score, 1.0) == pytest.approx(34.5)
    # Nothing above the top negative: the cut is the next float, flagging nothing.
    top = threshold_at_specificity([0, 1, 0], [0.1, 0.2, 0.9], 1.0)
    assert top == np.nextafter(0.9, 1.0)


def test_operating_points_apply_the_validation_threshold_to_test():
    val_y, val_score = case(0)
    test_y, test_score = case(1, n=60)
    points = operating_points(val_y, val_score, test_y, test_score)
    assert [p.target_specificity for p in points] == [0.90, 0.95]
    for p in points:
        assert p.threshold == threshold_at_specificity(val_y, val_score, p.target_specificity)
        assert (p.val_sensitivity, p.val_specificity) == pytest.approx(
            rates(val_y, val_score, p.threshold))
        assert (p.test_sensitivity, p.test_specificity) == pytest.approx(
            rates(test_y, test_score, p.threshold))
    # The test split never moves the threshold.
    other = operating_points(val_y, val_score, 1 - test_y, -test_score)
    assert [p.threshold for p in other] == [p.threshold for p in points]


def test_a_test_split_without_positives_leaves_sensitivity_undefined():
    val_y, val_score = case(2)
    (point,) = operating_points(val_y, val_score, [0, 0, 0], [0.1, 0.5, 3.0], [0.9])
    assert math.isnan(point.test_sensitivity) and point.test_specificity == pytest.approx(2 / 3)
    assert point.to_dict()["test_sensitivity"] is None
    assert point.to_dict()["threshold"] == point.threshold


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="validation needs both classes"):
        threshold_at_specificity([1, 1], [0.1, 0.2], 0.9)
    with pytest.raises(ValueError, match="test row 1: label 2"):
        operating_points([0, 1], [0.1, 0.2], [0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="validation row 0:.*score nan"):
        threshold_at_specificity([0, 1], [np.nan, 0.2], 0.9)
    with pytest.raises(ValueError, match=r"specificity must lie in \(0, 1\]"):
        threshold_at_specificity([0, 1], [0.1, 0.2], 90)
