"""Validation-fitted thresholds are the brute-force optimum; the normaliser never moves."""

import json

import numpy as np
import pytest

from jaxfundus.evaluate.thresholds import (
    ScoreNormalizer,
    candidate_thresholds,
    choose_threshold,
)


def validation_case(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    score = rng.normal(size=n) + y * rng.uniform(0, 2)
    if seed % 2 == 0:
        score = np.round(score, 1)  # ties
    return y, score


def brute_force_objective(y, score, t, criterion):
    """F1 or Youden's J of "positive iff score >= t", counted directly."""
    pred, pos = score >= t, y == 1
    tp, fp, fn = np.sum(pred & pos), np.sum(pred & ~pos), np.sum(~pred & pos)
    if criterion == "f1":
        return 2 * tp / (2 * tp + fp + fn)
    return tp / pos.sum() - fp / (~pos).sum()


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("criterion", ["f1", "youden"])
def test_choose_threshold_is_brute_force_optimum(seed, criterion):
    y, score = validation_case(seed)
    chosen = choose_threshold(y, score, criterion)
    # Brute force over every cut point: each distinct score and one value above the maximum.
    cuts = np.r_[np.unique(score), score.max() + 1]
    best = max(brute_force_objective(y, score, t, criterion) for t in cuts)
    assert brute_force_objective(y, score, chosen, criterion) == pytest.approx(best, abs=1e-12)
    # Tie rule: no lower candidate reaches the optimum.
    for t in candidate_thresholds(score):
        if t < chosen:
            assert brute_force_objective(y, score, t, criterion) < best - 1e-12


def test_choose_threshold_returns_midpoint_of_separating_gap():
    y = np.array([0, 0, 0, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    assert choose_threshold(y, score, "f1") == pytest.approx(0.5)
    assert choose_threshold(y, score, "youden") == pytest.approx(0.5)


def test_choose_threshold_tie_rule_prefers_lowest_threshold():
    # Cutting at 0.5 or 0.1 both give Youden 0.5; the lower threshold flags more positives.
    y = np.array([0, 1, 0, 1])
    score = np.array([0.0, 0.2, 0.3, 0.7])
    assert choose_threshold(y, score, "youden") == pytest.approx(0.1)


def test_choose_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="criterion"):
        choose_threshold([0, 1], [0.1, 0.2], "accuracy")


def test_candidates_split_adjacent_floats_correctly():
    lower = 1.0
    upper = np.nextafter(lower, 2.0)
    candidates = candidate_thresholds([lower, upper])
    # The only split above the minimum must put `lower` on the negative side.
    assert candidates[0] > lower and candidates[-1] == lower


def test_normalizer_stats_are_frozen_during_test_pass():
    normalizer = ScoreNormalizer.fit(np.array([2.0, 4.0, 6.0]))
    assert normalizer.to_dict() == {"method": "minmax", "low": 2.0, "high": 6.0}
    test_scores = np.array([1.0, 4.0, 10.0, 6.0])
    whole = normalizer.transform(test_scores)
    np.testing.assert_allclose(whole, [-0.25, 0.5, 2.0, 1.0])  # outside [0, 1], not clipped
    # Batch by batch gives the same values: no statistic is updated by what the test pass sees.
    batched = np.concatenate([normalizer.transform(b) for b in np.split(test_scores, 4)])
    np.testing.assert_array_equal(batched, whole)
    assert normalizer.to_dict() == {"method": "minmax", "low": 2.0, "high": 6.0}
    with pytest.raises(AttributeError):
        normalizer.low = 0.0


def test_normalizer_round_trips_through_json():
    normalizer = ScoreNormalizer.fit(np.random.default_rng(0).normal(size=20).astype(np.float32))
    restored = ScoreNormalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
    assert restored == normalizer
    x = np.linspace(-3, 3, 7)
    np.testing.assert_array_equal(restored.transform(x), normalizer.transform(x))


def test_normalizer_degenerate_and_invalid_fits():
    constant = ScoreNormalizer.fit([3.0, 3.0])
    np.testing.assert_array_equal(constant.transform([3.0, 4.0]), [0.0, 1.0])
    with pytest.raises(ValueError):
        ScoreNormalizer.fit([])
    with pytest.raises(ValueError):
        ScoreNormalizer.from_dict({"method": "zscore", "low": 0, "high": 1})
