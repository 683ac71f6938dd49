"""Decision thresholds and score normalisation, fitted on validation data only.

Both are fitted once on the validation split and then applied unchanged to the test split:
choosing a threshold or normalisation statistics on test data leaks the test labels or
distribution into the reported numbers.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import roc_curve

from jaxfundus.metrics import as_binary_labels, as_scores


def candidate_thresholds(scores) -> np.ndarray:
    """float64[K], descending: midpoints between adjacent distinct scores, then the minimum score.

    Predicting "positive iff score >= t" with t over these candidates realises every distinct
    split of the sorted scores that predicts at least one positive.
    """
    distinct = np.unique(np.asarray(scores, dtype=np.float64))[::-1]
    upper, lower = distinct[:-1], distinct[1:]
    midpoints = (upper + lower) / 2.0
    # Adjacent floats have no midpoint: it rounds onto `lower` and would flip that score's side.
    midpoints = np.where(midpoints > lower, midpoints, upper)
    return np.r_[midpoints, distinct[-1]]


def choose_threshold(labels, scores, criterion: Literal["f1", "youden"] = "f1") -> float:
    """Threshold t (predict positive iff score >= t) that maximises `criterion` on VALIDATION data.

    labels: int[N] of {0, 1} (1 = positive/anomalous), both classes required; scores: float[N].
    Never call this on test data. criterion "f1" maximises the positive-class F1, "youden"
    maximises sensitivity + specificity - 1. Candidates come from candidate_thresholds; when
    several reach the optimum the lowest threshold wins (more positives flagged, the safer error
    for screening).
    """
    y = as_binary_labels(labels)
    s = as_scores(scores, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need both classes to choose a threshold, got {n_pos} pos / {n_neg} neg")
    # Row k + 1 of the full ROC is the split "score >= k-th distinct score", i.e. candidate k;
    # row 0 (threshold +inf) predicts nothing positive and is not a candidate.
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # Integer counts back from the rates (tpr is tp / n_pos rounded once), so ties compare exactly.
    tp = np.rint(tpr[1:] * n_pos).astype(np.int64)
    fp = np.rint(fpr[1:] * n_neg).astype(np.int64)
    if criterion == "f1":
        # Equal ratios of integers give bit-identical float quotients, so ties compare exactly.
        objective = 2 * tp / (2 * tp + fp + (n_pos - tp))
    elif criterion == "youden":
        # tpr - fpr scaled by n_pos * n_neg: an exact integer, so ties compare exactly.
        objective = tp * n_neg - fp * n_pos
    else:
        raise ValueError(f"unknown criterion {criterion!r}; use 'f1' or 'youden'")
    best = np.flatnonzero(objective == objective.max())[-1]  # last = lowest threshold
    return float(candidate_thresholds(s)[best])


@dataclass(frozen=True)
class ScoreNormalizer:
    """Min-max score scaling with statistics frozen at fit time.

    Fit once on validation scores, then transform test scores without updating the statistics
    (the study rescaled with a running min/max inside the test pass, so a score's normalised
    value depended on the test images seen before it). Test scores outside the validation range
    map outside [0, 1]; they are not clipped, which would create ties and distort ranking metrics.
    """

    low: float
    high: float

    @classmethod
    def fit(cls, scores) -> "ScoreNormalizer":
        """Fit on float[N] validation scores (N >= 1)."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if s.size == 0 or not np.isfinite(s).all():
            raise ValueError("need a non-empty array of finite scores to fit")
        return cls(low=float(s.min()), high=float(s.max()))

    def transform(self, scores) -> np.ndarray:
        """float64 array of the input's shape: (scores - low) / (high - low).

        A constant validation set (high == low) has no scale, so scores are only shifted.
        """
        scale = self.high - self.low
        return (np.asarray(scores, dtype=np.float64) - self.low) / (scale if scale > 0 else 1.0)

    def to_dict(self) -> dict:
        return {"method": "minmax", "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreNormalizer":
        if d.get("method") != "minmax":
            raise ValueError(f"unsupported normalizer method {d.get('method')!r}")
        return cls(low=float(d["low"]), high=float(d["high"]))
