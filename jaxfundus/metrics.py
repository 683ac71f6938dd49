"""The metric dicts written to metrics.json: scikit-learn's metrics plus our policy on top.

sklearn.metrics computes every standard metric. What this module adds:
  * undefined is None in the dicts (NaN from roc_auc), never an error or a silent 0: AUROC
    needs both classes, AP needs a positive (sklearn returns 0.0 there);
  * macro averages run over the classes present in the labels;
  * the majority-class and all-anomalous baselines, multi-label top-1 accuracy and the anomaly
    operating points (sensitivity at 90% / 95% specificity);
  * input checks with one-line errors, and JSON-ready Python numbers.
Conventions: `y_bin` is a 1-D array of {0, 1} (1 = positive); `score` is a 1-D float array of
the same length, higher = more positive.
"""

import math
import warnings

import numpy as np
from sklearn import metrics as skm

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


def _has_both_classes(y: np.ndarray) -> bool:
    return bool(y.any() and not y.all())


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """int64[n_classes, n_classes]; rows are true classes, columns predicted classes.

    Every class gets a row and a column, also those absent from this split.
    """
    t, p = _as_class_ids(y_true, n_classes), _as_class_ids(y_pred, n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    return skm.confusion_matrix(t, p, labels=np.arange(n_classes))


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true: sklearn's balanced_accuracy_score, minus
    its warnings about classes that are only predicted or a split with one class, both common
    on small validation splits."""
    present = np.unique(y_true)
    return float(skm.recall_score(y_true, y_pred, labels=present, average="macro"))


def roc_auc(y_bin, score) -> float:
    """sklearn's AUROC (a tied positive/negative pair counts 1/2).

    Returns NaN (and warns) when y_bin holds only one class, where sklearn raises: AUROC ranks
    positives against negatives, so with either missing there is nothing to rank.
    """
    y = as_binary_labels(y_bin)
    s = as_scores(score, y.size)
    if not _has_both_classes(y):
        n_pos = int(y.sum())
        warnings.warn(
            f"AUROC undefined: {n_pos} positives and {y.size - n_pos} negatives; returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return float(skm.roc_auc_score(y, s))


def _auroc_or_none(y: np.ndarray, score: np.ndarray) -> float | None:
    """AUROC of bool[N] labels, or None (silently) when the split lacks either class."""
    return float(skm.roc_auc_score(y, score)) if _has_both_classes(y) else None


def _mean_or_none(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def sensitivity_at_specificity(y_bin, score, specificity: float) -> float:
    """Best tpr over ROC thresholds whose specificity (1 - fpr) >= `specificity`.

    NaN when either class is absent. The +inf threshold (specificity 1) is always eligible,
    so the result is 0.0 when no finite threshold reaches the target.
    """
    y = as_binary_labels(y_bin)
    s = as_scores(score, y.size)
    if not _has_both_classes(y):
        return math.nan
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    eligible = (1.0 - fpr) >= specificity - _SPECIFICITY_TOLERANCE
    return float(tpr[eligible].max())


def single_label_metrics(labels, probs, classes: list[str]) -> dict:
    """Metrics for a C-way softmax classifier.

    labels: int[N] class ids; probs: float[N, C] class probabilities; classes: C names.
    macro_auroc is class 1's AUROC when C == 2, else the one-vs-rest mean over the classes with
    both positives and negatives in `labels` (None if there are none). balanced_accuracy is the
    mean recall over the classes present in `labels`. The majority baselines always predict the
    most frequent class of `labels` (lowest id on a tie).
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
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "balanced_accuracy": _balanced_accuracy(labels, preds),
        "macro_auroc": macro_auroc,
        "confusion_matrix": confusion_matrix(labels, preds, n_classes).tolist(),
        "classes": list(classes),
        "n_test": int(labels.size),
        "baseline_majority_accuracy": float(skm.accuracy_score(labels, majority)),
        "baseline_majority_balanced_accuracy": _balanced_accuracy(labels, majority),
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
    p >= 0.5 equal the label row (sklearn's subset accuracy).
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
    return {
        "macro_auroc": _mean_or_none(auroc.values()),
        "auroc": auroc,
        "top1_accuracy": float(top1_correct.mean()),
        "exact_match_accuracy": float(
            skm.accuracy_score(labels, probs >= MULTI_LABEL_DECISION_THRESHOLD)
        ),
        "n_test": int(labels.shape[0]),
    }


def anomaly_metrics(labels, scores, threshold: float) -> dict:
    """Metrics for an anomaly detector; a sample is predicted anomalous when score >= threshold.

    labels: int[N] (1 = anomalous); scores: float[N], higher = more anomalous; threshold chosen
    on validation data (see jaxfundus.evaluate.thresholds). Undefined values are None: AUROC and
    the operating points without both classes, auprc and sensitivity without anomalies,
    specificity without normals. f1 is 0.0 when nothing is anomalous or predicted anomalous.
    """
    y = as_binary_labels(labels)
    s = as_scores(scores, y.size)
    pred = s >= threshold
    n_anomalous = int(y.sum())
    n_normal = y.size - n_anomalous
    tn, _, _, tp = skm.confusion_matrix(y, pred, labels=[False, True]).ravel().tolist()
    has_both = n_anomalous > 0 and n_normal > 0
    all_anomalous = np.ones(y.size, dtype=bool)
    return {
        "auroc": _auroc_or_none(y, s),
        "auprc": float(skm.average_precision_score(y, s)) if n_anomalous else None,
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred, zero_division=0.0)),
        "balanced_accuracy": _balanced_accuracy(y, pred),
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
            "accuracy": float(skm.accuracy_score(y, all_anomalous)),
            "f1": float(skm.f1_score(y, all_anomalous, zero_division=0.0)),
        },
    }
