"""Classification and ranking metrics in plain numpy, plus the metric dicts written to metrics.json.

Every function here is cross-checked against scikit-learn in tests/evaluate/test_metrics.py.
Conventions:
  * `y_bin` is a 1-D array of {0, 1} (1 = positive); `score` is a 1-D float array of the same
    length, higher = more positive.
  * A metric that is undefined on the given split (e.g. AUROC when only one class is present)
    is NaN from the array-level functions and None in the JSON-ready dicts.
"""

import math
import warnings

import numpy as np

# Thresholded predictions in multi-label mode use p >= 0.5, the usual sigmoid decision point.
MULTI_LABEL_DECISION_THRESHOLD = 0.5
# Tolerance for "specificity >= target": 1 - fp/n can land one ulp below a target such as 0.9.
_SPECIFICITY_TOLERANCE = 1e-12


def as_binary_labels(y_bin) -> np.ndarray:
    """bool[N] from a non-empty 1-D array of {0, 1}; raises ValueError otherwise."""
    y = np.asarray(y_bin)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty 1-D label array, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 or 1")
    return y.astype(bool)


def as_scores(score, n: int) -> np.ndarray:
    """float64[n] from finite scores; raises ValueError otherwise."""
    s = np.asarray(score, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"expected scores of shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s


def _as_class_ids(y, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty 1-D class-id array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"class ids must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"class ids must lie in [0, {n_classes})")
    return y.astype(np.int64)


def _json_float(value: float) -> float | None:
    """Python float for JSON, None for an undefined (NaN) metric."""
    return None if math.isnan(value) else float(value)


def counts_by_threshold(y: np.ndarray, s: np.ndarray):
    """(tp, fp) when predicting positive iff score >= t, for t over the distinct scores descending.

    y: bool[N]; s: float64[N] (validated by as_binary_labels / as_scores).

    Returns (thresholds float64[K], tp int64[K], fp int64[K]); tied scores share one threshold.
    """
    order = np.argsort(s, kind="mergesort")[::-1]
    s_sorted, y_sorted = s[order], y[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tp = np.cumsum(y_sorted, dtype=np.int64)[last_of_each_score]
    fp = last_of_each_score + 1 - tp
    return s_sorted[last_of_each_score], tp, fp


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """int64[n_classes, n_classes]; rows are true classes, columns predicted classes."""
    t, p = _as_class_ids(y_true, n_classes), _as_class_ids(y_pred, n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    return np.bincount(t * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    """Fraction of positions where y_true == y_pred (1-D arrays of equal length)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"expected equal non-empty 1-D arrays, got {t.shape} and {p.shape}")
    return float(np.mean(t == p))


def balanced_accuracy(y_true, y_pred, n_classes: int) -> float:
    """Mean recall over the classes present in y_true (as sklearn; absent classes are skipped)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def roc_curve(y_bin, score):
    """ROC over every distinct score: (fpr float64[K+1], tpr float64[K+1], thresholds float64[K+1]).

    thresholds[0] is +inf (nothing predicted positive), then distinct scores in descending order,
    as sklearn.metrics.roc_curve(..., drop_intermediate=False). fpr (tpr) is all-NaN when the
    split has no negatives (positives).
    """
    y = as_binary_labels(y_bin)
    thresholds, tp, fp = counts_by_threshold(y, as_scores(score, y.size))
    tp, fp = np.r_[0, tp], np.r_[0, fp]
    fpr = fp / fp[-1] if fp[-1] > 0 else np.full(fp.shape, np.nan)
    tpr = tp / tp[-1] if tp[-1] > 0 else np.full(tp.shape, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(y_bin, score) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic; a tied (pos, neg) pair counts 1/2.

    Returns NaN (and warns) when y_bin holds only one class: AUROC ranks positives against
    negatives, so with either missing there is nothing to rank.
    """
    y = as_binary_labels(y_bin)
    s = as_scores(score, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"AUROC undefined: {n_pos} positives and {n_neg} negatives; returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    # 1-based ranks, ties receive the average of the ranks they span.
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    group_end = np.cumsum(counts)
    average_rank = group_end - (counts - 1) / 2.0
    rank_sum_pos = average_rank[inverse][y].sum()
    u_statistic = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def average_precision(y_bin, score) -> float:
    """sklearn's AP: sum_k (R_k - R_{k-1}) * P_k over distinct score thresholds, descending.

    Returns NaN when there are no positives (recall is undefined; sklearn returns 0.0 there).
    """
    y = as_binary_labels(y_bin)
    _, tp, fp = counts_by_threshold(y, as_scores(score, y.size))
    if tp[-1] == 0:
        return math.nan
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def f1_score(y_bin, pred_bin) -> float:
    """F1 of the positive class, 2tp / (2tp + fp + fn); 0.0 when there are no true or predicted
    positives (sklearn's default zero_division)."""
    y, p = as_binary_labels(y_bin), as_binary_labels(pred_bin)
    if y.shape != p.shape:
        raise ValueError(f"y_bin {y.shape} and pred_bin {p.shape} differ in shape")
    tp = int(np.sum(y & p))
    denominator = 2 * tp + int(np.sum(~y & p)) + int(np.sum(y & ~p))
    return 2 * tp / denominator if denominator else 0.0


def sensitivity_at_specificity(y_bin, score, specificity: float) -> float:
    """Best tpr over ROC thresholds whose specificity (1 - fpr) >= `specificity`.

    NaN when either class is absent. The +inf threshold (specificity 1) is always eligible,
    so the result is 0.0 when no finite threshold reaches the target.
    """
    fpr, tpr, _ = roc_curve(y_bin, score)
    if np.isnan(fpr[0]) or np.isnan(tpr[0]):
        return math.nan
    eligible = (1.0 - fpr) >= specificity - _SPECIFICITY_TOLERANCE
    return float(tpr[eligible].max())


def _auroc_or_none(y_bin: np.ndarray, score: np.ndarray) -> float | None:
    """AUROC, or None (silently) when the split lacks positives or negatives."""
    if y_bin.all() or not y_bin.any():
        return None
    return roc_auc(y_bin, score)


def _mean_or_none(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def single_label_metrics(labels, probs, classes: list[str]) -> dict:
    """Metrics for a C-way softmax classifier.

    labels: int[N] class ids; probs: float[N, C] class probabilities; classes: C names.
    macro_auroc is class 1's AUROC when C == 2, else the one-vs-rest mean over the classes with
    both positives and negatives in `labels` (None if there are none). The majority baselines
    always predict the most frequent class of `labels` (lowest id on a tie).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must be [N, {len(classes)}], got {probs.shape}")
    n_classes = len(classes)
    labels = _as_class_ids(labels, n_classes)
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {probs.shape[0]} rows of probs")
    preds = probs.argmax(axis=1)
    if n_classes == 2:
        macro_auroc = _auroc_or_none(labels == 1, probs[:, 1])
    else:
        macro_auroc = _mean_or_none(
            _auroc_or_none(labels == c, probs[:, c]) for c in range(n_classes)
        )
    majority = np.full_like(labels, np.bincount(labels, minlength=n_classes).argmax())
    return {
        "accuracy": accuracy(labels, preds),
        "balanced_accuracy": balanced_accuracy(labels, preds, n_classes),
        "macro_auroc": macro_auroc,
        "confusion_matrix": confusion_matrix(labels, preds, n_classes).tolist(),
        "classes": list(classes),
        "n_test": int(labels.size),
        "baseline_majority_accuracy": accuracy(labels, majority),
        "baseline_majority_balanced_accuracy": balanced_accuracy(labels, majority, n_classes),
    }


def top1_class_scores(probs: np.ndarray) -> np.ndarray:
    """float[N, D+1] = [P(normal), p_1..p_D] with P(normal) = prod_d (1 - p_d).

    Treats the D sigmoid outputs as independent, so "no disease" has probability prod(1 - p_d);
    this turns a multi-label model into the study's (D+1)-way classifier for top-1 accuracy.
    """
    return np.column_stack([np.prod(1.0 - probs, axis=1), probs])


def multi_label_metrics(label_matrix, probs, classes: list[str]) -> dict:
    """Metrics for D independent sigmoid outputs.

    label_matrix: int[N, D] of {0, 1}; probs: float[N, D]; classes: the D disease names.
    macro_auroc: mean over the classes with both positives and negatives (None if none);
    auroc: class -> AUROC or None. top1_accuracy: the argmax of top1_class_scores (ties go to
    the lower index, normal first) is correct if it is one of the image's true classes, where an
    all-zero row means "normal". exact_match_accuracy: all D outputs thresholded at
    p >= 0.5 equal the label row.
    """
    labels = np.asarray(label_matrix)
    probs = np.asarray(probs, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != probs.shape or labels.shape[1] != len(classes):
        raise ValueError(
            f"label_matrix {labels.shape} and probs {probs.shape} must both be [N, {len(classes)}]"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("label_matrix must hold 0 or 1")
    labels = labels.astype(bool)
    auroc = {name: _auroc_or_none(labels[:, d], probs[:, d]) for d, name in enumerate(classes)}
    true_classes = np.column_stack([~labels.any(axis=1), labels])
    top1 = top1_class_scores(probs).argmax(axis=1)
    top1_correct = true_classes[np.arange(labels.shape[0]), top1]
    exact_match = np.all((probs >= MULTI_LABEL_DECISION_THRESHOLD) == labels, axis=1)
    return {
        "macro_auroc": _mean_or_none(auroc.values()),
        "auroc": auroc,
        "top1_accuracy": float(top1_correct.mean()),
        "exact_match_accuracy": float(exact_match.mean()),
        "n_test": int(labels.shape[0]),
    }


def anomaly_metrics(labels, scores, threshold: float) -> dict:
    """Metrics for an anomaly detector; a sample is predicted anomalous when score >= threshold.

    labels: int[N] (1 = anomalous); scores: float[N], higher = more anomalous; threshold chosen
    on validation data (see jaxfundus.evaluate.thresholds). Undefined values are None.
    """
    y = as_binary_labels(labels)
    s = as_scores(scores, y.size)
    pred = s >= threshold
    n_anomalous = int(y.sum())
    n_normal = y.size - n_anomalous
    tp, tn = int(np.sum(y & pred)), int(np.sum(~y & ~pred))
    has_both = n_anomalous > 0 and n_normal > 0
    all_anomalous = np.ones(y.size, dtype=bool)
    return {
        "auroc": _auroc_or_none(y, s),
        "auprc": _json_float(average_precision(y, s)),
        "accuracy": accuracy(y, pred),
        "f1": f1_score(y, pred),
        "balanced_accuracy": balanced_accuracy(y.astype(np.int64), pred.astype(np.int64), 2),
        "sensitivity": tp / n_anomalous if n_anomalous else None,
        "specificity": tn / n_normal if n_normal else None,
        "sensitivity_at_90_specificity": (
            sensitivity_at_specificity(y, s, 0.90) if has_both else None
        ),
        "sensitivity_at_95_specificity": (
            sensitivity_at_specificity(y, s, 0.95) if has_both else None
        ),
        "threshold": float(threshold),
        "n_test": int(y.size),
        "n_anomalous": n_anomalous,
        "n_normal": n_normal,
        "baseline_all_anomalous": {
            "accuracy": accuracy(y, all_anomalous),
            "f1": f1_score(y, all_anomalous),
        },
    }
