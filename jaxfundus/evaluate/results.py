"""Model outputs on a split -> the results contract: a predictions table and a metrics dict.

Every headline metric gets a 95% patient-level bootstrap interval beside it, `<metric>_ci`
([low, high], None where undefined; per class for multi-label `auroc`). The intervals are
computed from the predictions table (`headline_intervals`), so a fold's metrics.json and the
pooled out-of-fold predictions of a cross-validated run (summary.json) share one code path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from jaxfundus.evaluate import intervals as iv
from jaxfundus.evaluate.calibration import TemperatureScaling, reliability_diagram
from jaxfundus.evaluate.operating_points import operating_points
from jaxfundus.evaluate.thresholds import ScoreNormalizer, choose_threshold
from jaxfundus.metrics import (
    MULTI_LABEL_DECISION_THRESHOLD,
    anomaly_metrics,
    multi_label_metrics,
    single_label_metrics,
    top1_class_scores,
)

# Headline metrics of a two-class single-label task beyond accuracy/balanced accuracy/AUROC:
# the positive class (the second, e.g. the disease of normal-vs-AMD) as a detector.
BINARY_METRICS = ("auroc", "auprc", "f1", "sensitivity", "specificity")
# Joins a metric and a class in interval names: "auroc/AMD" is stored as auroc_ci["AMD"].
_PER_CLASS = "/"


def supervised_results(frame: pd.DataFrame, probs: np.ndarray, classes: tuple[str, ...],
                       multi_label: bool, *, seed: int = 0,
                       n_resamples: int = iv.DEFAULT_RESAMPLES) -> tuple[pd.DataFrame, dict]:
    """frame: the split's rows (filename, patient_id, label or label_<class>); probs float[N,C].

    Single-label columns: filename, patient_id, label, pred (class names), prob_<class>...
    Multi-label columns: filename, patient_id, label_<class>..., prob_<class>...
    Two-class single-label metrics also hold BINARY_METRICS of the second class. `seed` seeds
    the bootstrap (the run's seed).
    """
    out = frame[["filename", "patient_id"]].reset_index(drop=True).copy()
    prob_columns = {f"prob_{c}": probs[:, i] for i, c in enumerate(classes)}
    if multi_label:
        label_matrix = frame[[f"label_{c}" for c in classes]].to_numpy()
        for i, name in enumerate(classes):
            out[f"label_{name}"] = label_matrix[:, i]
        out = out.assign(**prob_columns)
        metrics = multi_label_metrics(label_matrix, probs, list(classes))
    else:
        labels = frame["label"].to_numpy()
        out["label"] = np.asarray(classes)[labels]
        out["pred"] = np.asarray(classes)[probs.argmax(1)]
        out = out.assign(**prob_columns)
        metrics = single_label_metrics(labels, probs, list(classes))
    found = headline_intervals(out, classes, seed=seed, n_resamples=n_resamples)
    if not multi_label and len(classes) == 2:
        metrics.update({name: _defined(found[name].estimate) for name in BINARY_METRICS})
    metrics.update(interval_fields(found))
    return out, metrics


def anomaly_results(frame: pd.DataFrame, scores: np.ndarray, val_labels: np.ndarray,
                    val_scores: np.ndarray, *, criterion: str, manual_threshold: float | None,
                    seed: int = 0,
                    n_resamples: int = iv.DEFAULT_RESAMPLES) -> tuple[pd.DataFrame, dict]:
    """Normalise with validation statistics, threshold from validation (or manual), score test.

    The normaliser and threshold are fitted on the validation split only and applied unchanged
    to the test split. A manual threshold is on the normalised scale and is used exactly. The
    operating points at 90%/95% specificity are also chosen on validation and measured on test.
    """
    normalizer = ScoreNormalizer.fit(val_scores)
    test_scores = normalizer.transform(scores)
    val_normalised = normalizer.transform(val_scores)
    if manual_threshold is None:
        threshold = choose_threshold(val_labels, val_normalised, criterion)
        source = "validation"
    else:
        threshold, source = float(manual_threshold), "manual"
    labels = frame["label"].to_numpy()
    out = frame[["filename", "patient_id"]].reset_index(drop=True).copy()
    out["label"] = labels
    out["score"] = test_scores
    out["pred"] = (test_scores >= threshold).astype(np.int64)
    metrics = anomaly_metrics(labels, test_scores, threshold)
    metrics.update(threshold_source=source, threshold_criterion=criterion,
                   normalizer=normalizer.to_dict(),
                   operating_points=validation_operating_points(val_labels, val_normalised,
                                                                labels, test_scores))
    metrics.update(interval_fields(headline_intervals(out, seed=seed, n_resamples=n_resamples)))
    return out, metrics


def calibration_fields(logits: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                       scaling: TemperatureScaling | None) -> dict:
    """metrics.json's `ece` and `reliability` (diagram data, 15 bins) of the test probs that
    predictions.csv holds, and with temperature scaling `calibration`: the temperature fitted
    on validation, test ECE before and after it and the diagram before it.

    logits float[N, C] (the model's, before scaling), probs float[N, C] (after, when scaled);
    labels int[N] class ids or {0,1}[N, C] multi-hot.
    """
    diagram = reliability_diagram(probs, labels)
    fields = {"ece": diagram.ece, "reliability": diagram.to_dict()}
    if scaling is not None:
        before = scaling.ece_before_after(logits, labels)
        unscaled = TemperatureScaling(1.0, scaling.kind).probs(logits)
        fields["calibration"] = {**scaling.to_dict(), **before, "fitted_on": "validation",
                                 "reliability_before": reliability_diagram(unscaled,
                                                                           labels).to_dict()}
    return fields


def validation_operating_points(val_labels, val_scores, test_labels,
                                test_scores) -> list[dict] | None:
    """metrics.json's operating_points: thresholds for 90%/95% specificity chosen on validation
    (labels {0,1}[N], scores float[N]) and the test rates they give; None when the validation
    split lacks a class (no threshold can be chosen there)."""
    if len(np.unique(val_labels)) < 2:
        return None
    return [point.to_dict() for point in operating_points(val_labels, val_scores, test_labels,
                                                          test_scores)]


def headline_intervals(predictions: pd.DataFrame, classes: tuple[str, ...] = (), *,
                       seed: int = 0,
                       n_resamples: int = iv.DEFAULT_RESAMPLES) -> dict[str, iv.Interval]:
    """Patient-bootstrap interval of every headline metric of a predictions table (the columns
    written above, one fold's or several folds' rows concatenated): metric name -> Interval,
    "<metric>/<class>" for a per-class metric. classes: the task's (unused for detectors).

    Detector tables (a `score` column): the binary metrics of score and pred. Multi-label
    (`label_<class>` columns): macro and per-class AUROC, top-1 and exact-match accuracy.
    Single-label: accuracy, balanced accuracy, macro AUROC (two classes: also BINARY_METRICS).
    """
    if "score" in predictions:
        statistics = iv.binary_statistics(predictions["label"].to_numpy(np.int64),
                                          predictions["score"].to_numpy(np.float64),
                                          predictions["pred"].to_numpy(np.int64))
    elif classes and all(f"label_{c}" in predictions for c in classes):
        statistics = _multi_label_statistics(predictions, classes)
    else:
        labels = _class_ids(predictions["label"], classes)
        probs = predictions[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
        statistics = iv.single_label_statistics(labels, probs)
    return iv.bootstrap(statistics, predictions["patient_id"].astype(str).to_numpy(),
                        n_resamples=n_resamples, seed=seed)


def _multi_label_statistics(predictions: pd.DataFrame,
                            classes: tuple[str, ...]) -> dict[str, iv.Statistic]:
    labels = predictions[[f"label_{c}" for c in classes]].to_numpy(np.int64)
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
    true_classes = np.column_stack([~labels.any(axis=1), labels.astype(bool)])
    top1 = true_classes[np.arange(len(labels)), top1_class_scores(probs).argmax(axis=1)]
    exact = ((probs >= MULTI_LABEL_DECISION_THRESHOLD) == labels.astype(bool)).all(axis=1)
    statistics = {"macro_auroc": iv.macro_auroc(labels, probs),
                  "top1_accuracy": iv.image_mean(top1.astype(np.float64)),
                  "exact_match_accuracy": iv.image_mean(exact.astype(np.float64))}
    for d, name in enumerate(classes):
        statistics[f"auroc{_PER_CLASS}{name}"] = iv.auroc(labels[:, d], probs[:, d])
    return statistics


def _class_ids(names: pd.Series, classes: tuple[str, ...]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(names.astype(str)) - set(index))
    if unknown:
        raise ValueError(f"predictions label {unknown[0]!r} is not one of the classes "
                         f"{', '.join(classes)}")
    return names.astype(str).map(index).to_numpy(np.int64)


def interval_fields(found: Mapping[str, iv.Interval]) -> dict:
    """{"<metric>_ci": [low, high] or None}; per-class metrics nest as {"<metric>_ci":
    {class: [low, high]}}."""
    fields: dict = {}
    for name, interval in found.items():
        metric, _, class_name = name.partition(_PER_CLASS)
        if class_name:
            fields.setdefault(f"{metric}_ci", {})[class_name] = interval.to_json()
        else:
            fields[f"{metric}_ci"] = interval.to_json()
    return fields


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
