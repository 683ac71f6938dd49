"""Patient-level bootstrap intervals for any metric, and DeLong's AUROC variance and comparison.

A test set holds several images of one patient (two eyes, repeat visits), and those images are
correlated: resampling images as if they were independent understates the uncertainty. Every
resample here draws PATIENTS with replacement and takes all images of each drawn patient, once per
draw. For image-level resampling pass one id per image (e.g. ``np.arange(n)``).

A resample is a row of integer weights over the N images: how many times each image appears in
it. A `Statistic` maps weights float64[B, N] to float64[B] (NaN where the statistic is undefined
on that resample, e.g. AUROC with one class). The factories below sort or one-hot encode their
data once and then evaluate B resamples with array operations, so a thousand resamples of every
headline metric of a few hundred images take a fraction of a second. `from_metric` wraps any
plain ``metric(labels, scores)`` the slow way (one call per resample).

    stats = binary_statistics(labels, scores, preds)
    intervals = bootstrap(stats, patient_ids)          # {"auroc": Interval(...), ...}
    intervals["auroc"].to_json()                        # [low, high] for metrics.json
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Resamples are drawn and evaluated this many at a time: bounds memory at B x N float64 per
# array (pooled out-of-fold sets reach ~10^4 images). Fixed, so a seed always gives the same draws.
_CHUNK = 250


@dataclass(frozen=True)
class Statistic:
    """A statistic of N images as a function of resample weights float64[B, N] -> float64[B];
    NaN marks a resample where it is undefined. ``statistic(np.ones((1, N)))`` is its value on
    the data as given."""

    n_images: int
    evaluate: Callable[[np.ndarray], np.ndarray]

    def __call__(self, weights) -> np.ndarray:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] != self.n_images:
            raise ValueError(f"weights must be [B, {self.n_images}], got shape {weights.shape}")
        return self.evaluate(weights)


@dataclass(frozen=True)
class Interval:
    """A statistic on the data as given, with its percentile bootstrap interval.

    n_undefined resamples (where the statistic was undefined) were skipped; low/high are NaN when
    no resample, or the estimate itself, is defined.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    n_undefined: int

    def to_json(self) -> list[float] | None:
        """[low, high] for metrics.json (``<metric>_ci``), None when undefined."""
        if math.isnan(self.low) or math.isnan(self.high):
            return None
        return [float(self.low), float(self.high)]


# --------------------------------------------------------------------------- resampling


def _patient_index(patient_ids) -> tuple[np.ndarray, int]:
    """(int64[N] patient index per image, number of patients)."""
    ids = np.asarray(patient_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"patient_ids must be a non-empty 1-D array, got shape {ids.shape}")
    _, index = np.unique(ids, return_inverse=True)
    return index.reshape(-1), int(index.max()) + 1


def _weight_chunks(patient_ids, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yields float64[b, N] image weights, b <= _CHUNK, n_resamples rows in all."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    patient_of_image, n_patients = _patient_index(patient_ids)
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _CHUNK):
        b = min(_CHUNK, n_resamples - start)
        drawn = rng.integers(0, n_patients, size=(b, n_patients))
        # Row r's draw counts per patient, via one bincount over row-offset patient indices.
        offsets = (drawn + n_patients * np.arange(b)[:, None]).ravel()
        counts = np.bincount(offsets, minlength=b * n_patients).reshape(b, n_patients)
        yield counts[:, patient_of_image].astype(np.float64)


def resample_weights(patient_ids, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> np.ndarray:
    """float64[n_resamples, N]: how often each image appears in each patient-level resample.

    patient_ids: [N] (any hashable dtype), one per image. Each row draws as many patients as there
    are, with replacement; all images of one patient share that patient's draw count. The same
    (patient_ids, n_resamples, seed) always give the same rows, whatever the row order of the
    images (weights follow the id, not the position), so two models scored on the same images get
    the same resamples: `bootstrap` intervals of two runs are paired.
    """
    return np.concatenate(list(_weight_chunks(patient_ids, n_resamples, seed)))


def bootstrap(statistics: Mapping[str, Statistic], patient_ids, *,
              n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              level: float = DEFAULT_LEVEL) -> dict[str, Interval]:
    """Percentile bootstrap interval of each statistic over the same patient-level resamples.

    statistics: name -> Statistic over the N images (from the factories in this module);
    patient_ids: [N]. Returns name -> Interval; `estimate` is the statistic on the data as given.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = len(patient_ids)
    for name, statistic in statistics.items():
        if statistic.n_images != n:
            raise ValueError(f"statistic {name!r} is over {statistic.n_images} images but "
                             f"{n} patient_ids were given; give one id per image")
    values = {name: [] for name in statistics}
    for weights in _weight_chunks(patient_ids, n_resamples, seed):
        for name, statistic in statistics.items():
            values[name].append(statistic(weights))
    ones = np.ones((1, n))
    tails = [(1 - level) / 2, (1 + level) / 2]
    intervals = {}
    for name, statistic in statistics.items():
        estimate = float(statistic(ones)[0])
        resampled = np.concatenate(values[name])
        defined = resampled[~np.isnan(resampled)]
        if defined.size and not math.isnan(estimate):
            low, high = np.quantile(defined, tails)
        else:
            low = high = math.nan
        intervals[name] = Interval(estimate, float(low), float(high), level, n_resamples,
                                   int(resampled.size - defined.size))
    return intervals


# --------------------------------------------------------------------------- input checks


def _binary(labels, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {y.shape}")
    bad = np.flatnonzero(~np.isin(y, (0, 1)))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {y[bad[0]]}; binary labels must be 0 or 1")
    return y.astype(bool)


def _finite(values, n: int, name: str, ndim: int = 1) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != ndim or v.shape[0] != n:
        raise ValueError(f"{name} must be {ndim}-D with {n} rows (one per label), got shape "
                         f"{v.shape}")
    bad = np.flatnonzero(~np.isfinite(v).reshape(n, -1).all(axis=1))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is not finite")
    return v


def _same_length(a, b, names: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"{names} must be non-empty 1-D arrays of one length, got "
                         f"{a.shape} and {b.shape}")
    return a, b


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (statistic undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


# --------------------------------------------------------------------------- statistics


def auroc(labels, scores) -> Statistic:
    """AUROC (Mann-Whitney; a tied positive/negative pair counts 1/2) of labels {0,1}[N] by
    scores float[N]. Undefined on a resample without positives or negatives."""
    y = _binary(labels)
    s = _finite(scores, y.size, "scores")
    order = np.argsort(s, kind="stable")
    s_sorted, positive = s[order], y[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]  # distinct scores, ascending

    def statistic(weights: np.ndarray) -> np.ndarray:
        w = weights[:, order]
        pos = np.add.reduceat(w * positive, group_start, axis=1)
        neg = np.add.reduceat(w * ~positive, group_start, axis=1)
        negatives_below = np.cumsum(neg, axis=1) - neg
        wins = np.sum(pos * (negatives_below + 0.5 * neg), axis=1)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        return _ratio(wins, n_pos * n_neg)

    return Statistic(y.size, statistic)


def auprc(labels, scores) -> Statistic:
    """Average precision as sklearn.metrics.average_precision_score: sum_k (R_k - R_{k-1}) P_k over
    distinct scores, descending. Undefined on a resample without positives."""
    y = _binary(labels)
    s = _finite(scores, y.size, "scores")
    order = np.argsort(-s, kind="stable")
    s_sorted, positive = s[order], y[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]  # distinct scores, descending

    def statistic(weights: np.ndarray) -> np.ndarray:
        w = weights[:, order]
        pos = np.add.reduceat(w * positive, group_start, axis=1)
        neg = np.add.reduceat(w * ~positive, group_start, axis=1)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        # A threshold whose group was not drawn adds no recall; its 0/0 precision is irrelevant.
        precision = np.nan_to_num(_ratio(tp, tp + fp))
        return _ratio(np.sum(pos * precision, axis=1), tp[:, -1])

    return Statistic(y.size, statistic)


def image_mean(values) -> Statistic:
    """Weighted mean of a per-image value float[N] (e.g. 1.0 where a prediction is correct:
    top-1 or exact-match accuracy of a multi-label model)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    return Statistic(v.size, lambda weights: weights @ v / weights.sum(axis=1))


def accuracy(labels, preds) -> Statistic:
    """Fraction of images with preds == labels (1-D arrays of class ids or {0,1})."""
    labels, preds = _same_length(labels, preds, "labels and preds")
    return image_mean(labels == preds)


def balanced_accuracy(labels, preds) -> Statistic:
    """Mean recall over the classes present in the resample's labels (as sklearn)."""
    labels, preds = _same_length(labels, preds, "labels and preds")
    classes = np.unique(labels)
    one_hot = (labels[:, None] == classes[None, :]).astype(np.float64)  # [N, C]
    hits = one_hot * (labels == preds)[:, None]

    def statistic(weights: np.ndarray) -> np.ndarray:
        recall = _ratio(weights @ hits, weights @ one_hot)  # [B, C], NaN for absent classes
        return np.nanmean(recall, axis=1)  # every resample holds at least one class

    return Statistic(labels.size, statistic)


def _binary_counts(labels, preds):
    y, p = _binary(labels), _binary(preds, "preds")
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and preds {p.shape} differ in shape")
    return tuple(c.astype(np.float64) for c in (y & p, ~y & p, y & ~p, ~y & ~p))


def sensitivity(labels, preds) -> Statistic:
    """tp / (tp + fn) of binary preds; undefined on a resample without positives."""
    tp, _, fn, _ = _binary_counts(labels, preds)
    return Statistic(tp.size, lambda weights: _ratio(weights @ tp, weights @ (tp + fn)))


def specificity(labels, preds) -> Statistic:
    """tn / (tn + fp) of binary preds; undefined on a resample without negatives."""
    _, fp, _, tn = _binary_counts(labels, preds)
    return Statistic(tn.size, lambda weights: _ratio(weights @ tn, weights @ (tn + fp)))


def f1(labels, preds) -> Statistic:
    """Positive-class F1, 2tp / (2tp + fp + fn); 0.0 with no true or predicted positives
    (sklearn's zero_division default)."""
    tp, fp, fn, _ = _binary_counts(labels, preds)
    return Statistic(tp.size, lambda weights: np.nan_to_num(
        _ratio(2 * weights @ tp, weights @ (2 * tp + fp + fn))))


def macro_auroc(labels, probs) -> Statistic:
    """Macro one-vs-rest AUROC, the mean over the classes defined on each resample.

    Single-label: labels int[N] class ids, probs float[N, C]; with C == 2 it is class 1's AUROC.
    Multi-label: labels {0,1}[N, D] and probs float[N, D]. A class without positives or negatives
    in a resample is left out of that resample's mean (as in metrics.json's macro_auroc); the
    statistic is undefined only when no class is defined.
    """
    labels = np.asarray(labels)
    probs = _finite(probs, labels.shape[0] if labels.ndim else 0, "probs", ndim=2)
    if labels.ndim == 2:
        if labels.shape != probs.shape:
            raise ValueError(f"label matrix {labels.shape} and probs {probs.shape} differ")
        per_class = [auroc(labels[:, c], probs[:, c]) for c in range(probs.shape[1])]
    else:
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or \
                labels.max() >= probs.shape[1]:
            raise ValueError(f"labels must be class ids in [0, {probs.shape[1]})")
        if probs.shape[1] == 2:
            return auroc(labels == 1, probs[:, 1])
        per_class = [auroc(labels == c, probs[:, c]) for c in range(probs.shape[1])]

    def statistic(weights: np.ndarray) -> np.ndarray:
        values = np.stack([s(weights) for s in per_class], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN row -> NaN, as intended
            return np.nanmean(values, axis=1)

    return Statistic(labels.shape[0], statistic)


def difference(a: Statistic, b: Statistic) -> Statistic:
    """a - b on the same resample: the paired difference of two statistics (e.g. two models'
    AUROC on the same images). Undefined where either is."""
    if a.n_images != b.n_images:
        raise ValueError(f"statistics over {a.n_images} and {b.n_images} images cannot be paired")
    return Statistic(a.n_images, lambda weights: a(weights) - b(weights))


def from_metric(metric: Callable[..., float], *arrays) -> Statistic:
    """Any ``metric(*arrays) -> float`` over arrays of N rows (e.g. an sklearn metric), evaluated
    once per resample on the resampled rows. The metric must return NaN where it is undefined.
    Slow (one Python call per resample); prefer the vectorised factories for headline metrics."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = arrays[0].shape[0]
    if any(a.shape[:1] != (n,) for a in arrays):
        raise ValueError(f"arrays must share their first dimension, got "
                         f"{[a.shape for a in arrays]}")
    rows = np.arange(n)

    def statistic(weights: np.ndarray) -> np.ndarray:
        out = np.empty(weights.shape[0])
        for r, w in enumerate(weights):
            index = np.repeat(rows, w.astype(np.int64))
            out[r] = metric(*(a[index] for a in arrays))
        return out

    return Statistic(n, statistic)


# --------------------------------------------------------------------------- headline sets


def binary_statistics(labels, scores, preds) -> dict[str, Statistic]:
    """Headline statistics of a binary detector (keys as in metrics.json): auroc, auprc from
    scores float[N]; accuracy, balanced_accuracy, f1, sensitivity, specificity from
    preds {0,1}[N] (thresholded scores); labels {0,1}[N]."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    return {
        "auroc": auroc(labels, scores),
        "auprc": auprc(labels, scores),
        "accuracy": accuracy(labels, preds),
        "balanced_accuracy": balanced_accuracy(labels, preds),
        "f1": f1(labels, preds),
        "sensitivity": sensitivity(labels, preds),
        "specificity": specificity(labels, preds),
    }


def single_label_statistics(labels, probs) -> dict[str, Statistic]:
    """Headline statistics of a C-way softmax classifier: accuracy, balanced_accuracy (of the
    argmax) and macro_auroc; labels int[N], probs float[N, C]. With C == 2 also auroc (= macro),
    auprc, f1, sensitivity and specificity of class 1 (the argmax, i.e. p1 > p0)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(axis=1)
    statistics = {
        "accuracy": accuracy(labels, preds),
        "balanced_accuracy": balanced_accuracy(labels, preds),
        "macro_auroc": macro_auroc(labels, probs),
    }
    if probs.shape[1] == 2:
        binary = binary_statistics(labels, probs[:, 1], preds)
        statistics.update({k: binary[k] for k in ("auroc", "auprc", "f1", "sensitivity",
                                                  "specificity")})
    return statistics


def multi_label_statistics(label_matrix, probs, classes) -> dict[str, Statistic]:
    """Multi-label statistics: macro_auroc and ``auroc_<class>`` per class; label_matrix
    {0,1}[N, D], probs float[N, D], classes D names. Top-1 / exact-match accuracy: pass the
    per-image correctness to `image_mean`."""
    label_matrix = np.asarray(label_matrix)
    probs = np.asarray(probs, dtype=np.float64)
    statistics = {"macro_auroc": macro_auroc(label_matrix, probs)}
    for d, name in enumerate(classes):
        statistics[f"auroc_{name}"] = auroc(label_matrix[:, d], probs[:, d])
    return statistics


# --------------------------------------------------------------------------- DeLong


@dataclass(frozen=True)
class DelongInterval:
    """AUROC with DeLong's variance and its normal-approximation interval (clipped to [0, 1])."""

    auroc: float
    variance: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class AurocComparison:
    """Two scorers on the same images: AUROCs, the paired difference (a - b) with its patient
    bootstrap interval, and DeLong's two-sided p-value for a difference of 0."""

    auroc_a: float
    auroc_b: float
    difference: Interval
    p_value: float

    def to_dict(self) -> dict:
        return {"auroc_a": self.auroc_a, "auroc_b": self.auroc_b,
                "difference": self.difference.estimate,
                "difference_ci": self.difference.to_json(), "p_value": self.p_value,
                "n_resamples": self.difference.n_resamples,
                "n_undefined": self.difference.n_undefined}


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    x_sorted = x[order]
    start = np.r_[0, np.flatnonzero(np.diff(x_sorted)) + 1]
    end = np.r_[start[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((start + 1 + end) / 2.0, end - start)
    return ranks


def _structural_components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placements: v10[i] = P(positive i outranks a negative), v01[j] = P(a positive
    outranks negative j), ties 1/2; both average to the AUROC. Via midranks (Sun & Xu 2014)."""
    pos, neg = s[y], s[~y]
    m, n = pos.size, neg.size
    combined = _midranks(np.r_[pos, neg])
    v10 = (combined[:m] - _midranks(pos)) / n
    v01 = 1.0 - (combined[m:] - _midranks(neg)) / m
    return v10, v01


def _delong_inputs(labels, scores: list) -> tuple[np.ndarray, list[np.ndarray]]:
    y = _binary(labels)
    n_pos = int(y.sum())
    if n_pos < 2 or y.size - n_pos < 2:
        raise ValueError(f"DeLong's variance needs >= 2 positives and >= 2 negatives, got "
                         f"{n_pos} and {y.size - n_pos}")
    return y, [_finite(s, y.size, "scores") for s in scores]


def _variance(v10: np.ndarray, v01: np.ndarray) -> float:
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


def delong_auroc(labels, scores, *, level: float = DEFAULT_LEVEL) -> DelongInterval:
    """AUROC of scores float[N] for labels {0,1}[N] with DeLong et al.'s (1988) variance.

    Treats images as independent: with several images per patient its interval is too narrow;
    the patient bootstrap (`bootstrap` with `auroc`) is not.
    """
    y, (s,) = _delong_inputs(labels, [scores])
    v10, v01 = _structural_components(y, s)
    value, variance = float(v10.mean()), _variance(v10, v01)
    half = NormalDist().inv_cdf((1 + level) / 2) * math.sqrt(variance)
    return DelongInterval(value, variance, max(0.0, value - half), min(1.0, value + half), level)


def compare_aurocs(labels, scores_a, scores_b, patient_ids, *,
                   n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                   level: float = DEFAULT_LEVEL) -> AurocComparison:
    """AUROC(a) - AUROC(b) of two scorers float[N] on the same images, labels {0,1}[N].

    The interval is a paired patient bootstrap (both scorers on each resample); the p-value is
    DeLong's two-sided test with the covariance of the two AUROCs (images taken as independent).
    Identical scores give a difference of exactly 0 and p = 1.
    """
    y, (a, b) = _delong_inputs(labels, [scores_a, scores_b])
    (a10, a01), (b10, b01) = _structural_components(y, a), _structural_components(y, b)
    observed = float(a10.mean() - b10.mean())
    variance = _variance(a10 - b10, a01 - b01)
    if variance > 0:
        p_value = math.erfc(abs(observed) / math.sqrt(2 * variance))
    else:  # every placement equal: the scorers rank all pairs alike (or both perfectly)
        p_value = 1.0 if observed == 0 else 0.0
    paired = bootstrap({"difference": difference(auroc(y, a), auroc(y, b))}, patient_ids,
                       n_resamples=n_resamples, seed=seed, level=level)["difference"]
    return AurocComparison(float(a10.mean()), float(b10.mean()), paired, p_value)
