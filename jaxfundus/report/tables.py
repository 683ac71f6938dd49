"""The summary table: one row per task x model, as numbers (summary.csv) and as text."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.methods.kinds import kind_of
from jaxfundus.runs import Fold, Run, is_number

METRIC_TITLES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "auroc": "AUROC", "top1_accuracy": "top-1 accuracy", "f1": "F1"}
# Per metric: mean and std over folds, then its value on the pooled test predictions of all
# folds with the 95% patient-bootstrap interval (summary.json's pooled, pooled_ci).
CSV_COLUMNS = ["task", "model", "kind", "status", "folds_done", "folds_expected", "n_test",
               *(name for metric in METRIC_TITLES
                 for name in (metric, f"{metric}_std", f"{metric}_pooled", f"{metric}_ci_low",
                              f"{metric}_ci_high")),
               "baseline", "baseline_accuracy", "baseline_f1", "study"]


def fold_baseline(run: Run, fold: Fold) -> float | None:
    """The accuracy of the trivial predictor on this fold's test split (its kind's baseline)."""
    return kind_of(run.spec).baseline(fold, run.spec.classes)


def mean_of(values: Iterable[Any]) -> float | None:
    """Mean of the defined numbers among values; None when there are none."""
    numbers = [v for v in values if is_number(v)]
    return float(np.mean(numbers)) if numbers else None


def summary_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run (CSV_COLUMNS): status, folds, n_test, each metric's mean and std over
    folds (from summary.json), the trivial baseline and the study's reported figure."""
    table = pd.DataFrame([_row(run) for run in runs], columns=CSV_COLUMNS)
    return table.astype({"folds_done": "Int64", "folds_expected": "Int64", "n_test": "Int64"})


def _row(run: Run) -> dict:
    row = {"task": run.spec.name, "model": run.model, "kind": run.spec.kind,
           "status": run.status, "folds_done": len(run.folds),
           "folds_expected": run.folds_expected, "study": run.spec.study.get(run.model, "")}
    if run.summary is None:
        return row
    row["n_test"] = run.summary.get("n_test")
    metrics = run.summary.get("metrics", {})
    kind = kind_of(run.spec)
    for column, source in kind.table_metrics.items():
        if source in metrics:
            entry = metrics[source]
            row[column], row[f"{column}_std"] = entry["mean"], entry["std"]
            row[f"{column}_pooled"] = entry.get("pooled")
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = entry.get("pooled_ci") or (
                None, None)
    row["baseline"] = kind.baseline_name
    row["baseline_accuracy"] = mean_of(fold_baseline(run, fold) for fold in run.folds)
    row["baseline_f1"] = mean_of(kind.baseline_f1(fold) for fold in run.folds)
    return row


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """summary_table for people: 'mean ± std' text, folds as k/n, blanks where nothing applies."""
    rows = []
    for row in table.to_dict("records"):
        shown = {key: row[key] for key in ("task", "model", "kind", "status")}
        shown["folds"] = f"{row['folds_done']}/{row['folds_expected']}"
        shown["n_test"] = "" if pd.isna(row["n_test"]) else str(row["n_test"])
        for column, title in METRIC_TITLES.items():
            shown[title] = metric_text(row, column)
        shown["baseline"] = _baseline_text(row)
        shown["study reported"] = row["study"]
        rows.append(shown)
    return pd.DataFrame(rows)


def metric_text(row: dict, column: str) -> str:
    """'0.920 [0.880, 0.950]' for one fold; with several, 'mean ± std over folds; pooled
    0.915 [0.870, 0.950]'; the bare number where no interval was stored."""
    mean, std, folds = row[column], row[f"{column}_std"], row["folds_done"]
    if pd.isna(mean):
        return ""
    low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
    interval = "" if pd.isna(low) or pd.isna(high) else f" [{low:.3f}, {high:.3f}]"
    if folds <= 1 or pd.isna(std):
        return f"{mean:.3f}{interval}"
    pooled = row[f"{column}_pooled"]
    pooled_text = (f"; pooled {pooled:.3f}{interval}" if interval and not pd.isna(pooled)
                   else "")
    return f"{mean:.3f} ± {std:.3f}{pooled_text}"


def _baseline_text(row: dict) -> str:
    if pd.isna(row["baseline_accuracy"]):
        return ""
    f1 = "" if pd.isna(row["baseline_f1"]) else f", F1 {row['baseline_f1']:.3f}"
    return f"acc {row['baseline_accuracy']:.3f}{f1} ({row['baseline']})"


def markdown_table(frame: pd.DataFrame) -> str:
    def cells(values: Iterable[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(frame.columns), cells("---" for _ in frame.columns)]
    lines += [cells(row) for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
