"""Model outputs on a split -> the results contract: a predictions table and a metrics dict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxfundus.evaluate.thresholds import ScoreNormalizer, choose_threshold
from jaxfundus.metrics import anomaly_metrics, multi_label_metrics, single_label_metrics


def supervised_results(frame: pd.DataFrame, probs: np.ndarray, classes: tuple[str, ...],
                       multi_label: bool) -> tuple[pd.DataFrame, dict]:
    """frame: the split's rows (filename, patient_id, label or label_<class>); probs float[N,C].

    Single-label columns: filename, patient_id, label, pred (class names), prob_<class>...
    Multi-label columns: filename, patient_id, label_<class>..., prob_<class>...
    """
    out = frame[["filename", "patient_id"]].reset_index(drop=True).copy()
    prob_columns = {f"prob_{c}": probs[:, i] for i, c in enumerate(classes)}
    if multi_label:
        label_matrix = frame[[f"label_{c}" for c in classes]].to_numpy()
        for i, name in enumerate(classes):
            out[f"label_{name}"] = label_matrix[:, i]
        out = out.assign(**prob_columns)
        return out, multi_label_metrics(label_matrix, probs, list(classes))
    labels = frame["label"].to_numpy()
    out["label"] = np.asarray(classes)[labels]
    out["pred"] = np.asarray(classes)[probs.argmax(1)]
    out = out.assign(**prob_columns)
    return out, single_label_metrics(labels, probs, list(classes))


def anomaly_results(frame: pd.DataFrame, scores: np.ndarray, val_labels: np.ndarray,
                    val_scores: np.ndarray, *, criterion: str,
                    manual_threshold: float | None) -> tuple[pd.DataFrame, dict]:
    """Normalise with validation statistics, threshold from validation (or manual), score test.

    The normaliser and threshold are fitted on the validation split only and applied unchanged
    to the test split. A manual threshold is on the normalised scale and is used exactly.
    """
    normalizer = ScoreNormalizer.fit(val_scores)
    test_scores = normalizer.transform(scores)
    if manual_threshold is None:
        threshold = choose_threshold(val_labels, normalizer.transform(val_scores), criterion)
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
                   normalizer=normalizer.to_dict())
    return out, metrics
