"""Calibration: expected calibration error, reliability diagrams, temperature scaling.

Three kinds of prediction are recognised by the shapes of (probs or logits, labels):
  * binary:       float[N] (P(positive) or its logit)  with labels {0,1}[N]
  * single-label: float[N, C] (softmax or its logits)   with labels int[N] class ids
  * multi-label:  float[N, D] (sigmoids or their logits) with labels {0,1}[N, D]; each
    (image, class) pair is scored as one binary prediction (one-vs-rest, pooled).
A binary prediction's top class is "positive" when p >= 0.5, with confidence max(p, 1 - p).

Temperature scaling divides logits by one scalar T fitted on the VALIDATION split only (it never
sees test data) and leaves the argmax, hence accuracy, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BINS = 15
# Fitted temperatures are confined to this range: a validation set that the logits separate
# perfectly drives the NLL optimum to T -> 0, which would make test predictions 0/1.
TEMPERATURE_RANGE = (1e-2, 1e2)
_BISECTION_STEPS = 80  # halves log(1/T)'s bracket of width ~9.2 down to float64 resolution
# Probabilities are clipped this far from 0 and 1 before taking logits of them.
_PROB_EPSILON = 1e-7


def _kind(values: np.ndarray, labels: np.ndarray) -> str:
    """'binary', 'single-label' or 'multi-label' from the shapes; ValueError otherwise."""
    if values.ndim == 1 and labels.shape == values.shape and values.size:
        return "binary"
    if values.ndim == 2 and values.shape[0] and labels.shape == values.shape[:1]:
        return "single-label"
    if values.ndim == 2 and values.shape[0] and labels.shape == values.shape:
        return "multi-label"
    raise ValueError(f"expected float[N] with labels [N], float[N, C] with class ids [N], or "
                     f"float[N, D] with labels [N, D]; got {values.shape} and {labels.shape}")


def _checked(values, labels, name: str) -> tuple[np.ndarray, np.ndarray, str]:
    values, labels = np.asarray(values, dtype=np.float64), np.asarray(labels)
    kind = _kind(values, labels)
    if not np.isfinite(values).all():
        row = np.flatnonzero(~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1))[0]
        raise ValueError(f"{name}[{row}] is not finite")
    if kind == "single-label":
        n_classes = values.shape[1]
        bad = np.flatnonzero((labels < 0) | (labels >= n_classes) | (labels != labels.round()))
        if bad.size:
            raise ValueError(f"labels[{bad[0]}] = {labels[bad[0]]} is not a class id in "
                             f"[0, {n_classes})")
        return values, labels.astype(np.int64), kind
    bad = np.flatnonzero(~np.isin(labels, (0, 1)).reshape(labels.shape[0], -1).all(axis=1))
    if bad.size:
        raise ValueError(f"labels[{bad[0]}] must be 0 or 1")
    return values, labels.astype(np.float64), kind


def top_class(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """(confidence float64[M], correct bool[M]) of each prediction's top class.

    M = N for binary and single-label predictions, N * D for multi-label ones (one-vs-rest).
    """
    probs, labels, kind = _checked(probs, labels, "probs")
    if (probs < 0).any() or (probs > 1).any():
        raise ValueError("probs must lie in [0, 1]; pass logits to TemperatureScaling instead")
    if kind == "single-label":
        return probs.max(axis=1), probs.argmax(axis=1) == labels
    p, y = probs.ravel(), labels.ravel().astype(bool)
    return np.maximum(p, 1.0 - p), (p >= 0.5) == y


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per equal-width confidence bin (lo, hi]: mean confidence, accuracy and count.

    edges float64[n_bins + 1]; confidence, accuracy float64[n_bins] (NaN for empty bins);
    count int64[n_bins]. ece = sum_k count_k / M * |accuracy_k - confidence_k|.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] * gaps) / self.count.sum())

    def to_dict(self) -> dict:
        """JSON-ready: lists, None for an empty bin's confidence and accuracy."""
        def listed(values):
            return [None if np.isnan(v) else float(v) for v in values]
        return {"edges": self.edges.tolist(), "confidence": listed(self.confidence),
                "accuracy": listed(self.accuracy), "count": self.count.tolist(),
                "ece": self.ece}


def reliability_diagram(probs, labels, n_bins: int = N_BINS) -> ReliabilityDiagram:
    """Bins the top-class confidence of probs into n_bins equal-width bins (see module doc)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence, correct = top_class(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin k holds (k/n, (k+1)/n]; a confidence of exactly 0 joins bin 0.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return ReliabilityDiagram(edges, mean_confidence, accuracy, count)


def expected_calibration_error(probs, labels, n_bins: int = N_BINS) -> float:
    """ECE of the top-class confidence over n_bins equal-width bins, in [0, 1]."""
    return reliability_diagram(probs, labels, n_bins).ece


# --------------------------------------------------------------------------- temperature


def logits_from_probs(probs, *, multi_label: bool = False) -> np.ndarray:
    """Logits that reproduce probs: log p for a softmax float[N, C] (softmax ignores the shift),
    log(p / (1 - p)) for sigmoids (float[N], or float[N, D] with multi_label=True)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _PROB_EPSILON, 1.0 - _PROB_EPSILON)
    if p.ndim == 2 and not multi_label:
        return np.log(p)
    return np.log(p) - np.log1p(-p)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def _probabilities(logits: np.ndarray, kind: str, temperature: float) -> np.ndarray:
    z = logits / temperature
    return _softmax(z) if kind == "single-label" else _sigmoid(z)


def _nll_slope(logits: np.ndarray, labels: np.ndarray, kind: str, beta: float) -> float:
    """d/d(beta) of the mean NLL of logits * beta. The NLL is convex in beta, so this increases."""
    if kind == "single-label":
        p = _softmax(beta * logits)
        chosen = np.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
        return float(np.mean(np.sum(p * logits, axis=1) - chosen))
    return float(np.mean((_sigmoid(beta * logits) - labels) * logits))


@dataclass(frozen=True)
class TemperatureScaling:
    """Logits / temperature, with the temperature fitted on validation data.

    kind: 'binary', 'single-label' or 'multi-label' (softmax for single-label, else sigmoid).
    """

    temperature: float
    kind: str

    @classmethod
    def fit(cls, val_logits, val_labels) -> TemperatureScaling:
        """T minimising the mean negative log-likelihood of VALIDATION logits and labels.

        val_logits float[N] / float[N, C] / float[N, D] with labels as in the module doc (turn
        probabilities into logits with `logits_from_probs`). One-dimensional and convex in 1/T,
        so a bisection on the slope finds it deterministically, within TEMPERATURE_RANGE.
        """
        logits, labels, kind = _checked(val_logits, val_labels, "val_logits")
        low, high = np.log(1.0 / TEMPERATURE_RANGE[1]), np.log(1.0 / TEMPERATURE_RANGE[0])
        if _nll_slope(logits, labels, kind, np.exp(low)) >= 0:
            return cls(TEMPERATURE_RANGE[1], kind)
        if _nll_slope(logits, labels, kind, np.exp(high)) <= 0:
            return cls(TEMPERATURE_RANGE[0], kind)
        for _ in range(_BISECTION_STEPS):  # on log(1/T): the slope's sign brackets the minimum
            middle = 0.5 * (low + high)
            if _nll_slope(logits, labels, kind, np.exp(middle)) < 0:
                low = middle
            else:
                high = middle
        return cls(float(np.exp(-0.5 * (low + high))), kind)

    def probs(self, logits) -> np.ndarray:
        """Calibrated probabilities float64, shaped like logits (float[N], [N, C] or [N, D])."""
        return _probabilities(np.asarray(logits, dtype=np.float64), self.kind, self.temperature)

    def ece_before_after(self, logits, labels, n_bins: int = N_BINS) -> dict[str, float]:
        """{'temperature', 'ece_before', 'ece_after'} on (typically test) logits and labels."""
        logits, labels, kind = _checked(logits, labels, "logits")
        if kind != self.kind:
            raise ValueError(f"temperature was fitted on {self.kind} logits, got {kind} ones")
        return {"temperature": self.temperature,
                "ece_before": expected_calibration_error(_probabilities(logits, kind, 1.0),
                                                         labels, n_bins),
                "ece_after": expected_calibration_error(self.probs(logits), labels, n_bins)}

    def to_dict(self) -> dict:
        return {"method": "temperature", "temperature": self.temperature, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> TemperatureScaling:
        if d.get("method") != "temperature":
            raise ValueError(f"unsupported calibration method {d.get('method')!r}")
        return cls(temperature=float(d["temperature"]), kind=str(d["kind"]))
