"""Operating points at a fixed specificity: threshold chosen on validation, applied to test.

A screening test is quoted as "catches X% of diseased eyes at 90% specificity". Reading that off
the test ROC curve picks the threshold with the test labels, which flatters it; here the
threshold is fixed on the validation split and the test split only measures what it gives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from jaxfundus.evaluate.thresholds import candidate_thresholds

DEFAULT_SPECIFICITIES = (0.90, 0.95)


def _labels_and_scores(labels, scores, split: str) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.size == 0 or s.shape != y.shape:
        raise ValueError(f"{split} labels {y.shape} and scores {s.shape} must be non-empty 1-D "
                         f"arrays of one length")
    bad = np.flatnonzero(~np.isin(y, (0, 1)) | ~np.isfinite(s))
    if bad.size:
        raise ValueError(f"{split} row {bad[0]}: label {y[bad[0]]} must be 0 or 1 and score "
                         f"{s[bad[0]]} finite")
    return y.astype(bool), s


def _rate(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def threshold_at_specificity(val_labels, val_scores, specificity: float) -> float:
    """Threshold t (positive iff score >= t) reaching `specificity` on VALIDATION data.

    val_labels {0,1}[N] (1 = diseased; both classes required), val_scores float[N], higher = more
    diseased. Among candidates (midpoints between distinct scores, the minimum, and the next float
    above the maximum, which flags nothing) whose validation specificity >= the target, returns
    the lowest, i.e. the one with the highest validation sensitivity.
    """
    if not 0 < specificity <= 1:
        raise ValueError(f"specificity must lie in (0, 1], got {specificity}")
    y, s = _labels_and_scores(val_labels, val_scores, "validation")
    negatives = np.sort(s[~y])
    if negatives.size == 0 or negatives.size == y.size:
        raise ValueError(f"validation needs both classes, got {int(y.sum())} positive and "
                         f"{negatives.size} negative")
    candidates = np.r_[candidate_thresholds(s)[::-1], np.nextafter(s.max(), np.inf)]
    # Negatives below t are the true negatives of "positive iff score >= t". tn / n is correctly
    # rounded, so exactly 27 of 30 reaches 0.9 (1 - fp / n could land an ulp below it).
    reached = np.searchsorted(negatives, candidates, side="left") / negatives.size
    eligible = reached >= specificity
    return float(candidates[np.argmax(eligible)])  # the last candidate is always eligible


@dataclass(frozen=True)
class OperatingPoint:
    """A validation-chosen threshold and the sensitivity/specificity it gives on both splits.

    Test rates are NaN when the test split lacks that class.
    """

    target_specificity: float
    threshold: float
    val_sensitivity: float
    val_specificity: float
    test_sensitivity: float
    test_specificity: float

    def to_dict(self) -> dict:
        """JSON-ready: None for an undefined rate."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v
                for k, v in asdict(self).items()}


def _rates(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float, float]:
    predicted = s >= threshold
    return (_rate(int(np.sum(predicted & y)), int(y.sum())),
            _rate(int(np.sum(~predicted & ~y)), int(np.sum(~y))))


def operating_points(val_labels, val_scores, test_labels, test_scores,
                     specificities=DEFAULT_SPECIFICITIES) -> list[OperatingPoint]:
    """One OperatingPoint per target specificity: threshold from validation, rates on test.

    labels {0,1}[N] and scores float[N] per split, as for `threshold_at_specificity`.
    """
    val_y, val_s = _labels_and_scores(val_labels, val_scores, "validation")
    test_y, test_s = _labels_and_scores(test_labels, test_scores, "test")
    points = []
    for target in specificities:
        threshold = threshold_at_specificity(val_y, val_s, target)
        points.append(OperatingPoint(float(target), threshold, *_rates(val_y, val_s, threshold),
                                     *_rates(test_y, test_s, threshold)))
    return points
