"""The results layout: where every file of a run lives, and the one way to write and read them.

    WORKDIR/<task>/<model>/fold-<k>/  checkpoints/, history.csv, tensorboard/, split.csv,
                                      predictions.csv, metrics.json, config.json, (pictures:
                                      saliency.png, reconstructions.png)
    WORKDIR/<task>/<model>/summary.json   each metric's mean and std over the finished folds,
                                          and its value and 95% interval on the pooled
                                          predictions of those folds

Training, evaluation, prediction and the report all go through this module, so the layout and
the fold summary are defined once. Nothing here imports jax.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.config import RunConfig, TaskSpec, load_task
from jaxfundus.io import write_csv_atomic, write_json_atomic

CHECKPOINTS = "checkpoints"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"
SPLIT = "split.csv"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"
CONFIG = "config.json"
SUMMARY = "summary.json"
SALIENCY = "saliency.png"  # supervised folds: test images with their Grad-CAM maps
# The pooled intervals of summary.json: (predictions.csv rows of all folds, task classes, seed=)
# -> metric name -> Interval (estimate, to_json()). This module sits below jaxfundus.evaluate,
# so the layers above pass in jaxfundus.evaluate.results.headline_intervals.
PooledIntervals = Callable[..., Mapping[str, Any]]
# The fold metrics that summary.json averages (those a fold's metrics.json has).
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc", "top1_accuracy",
                   "exact_match_accuracy", "auroc", "auprc", "f1", "sensitivity", "specificity",
                   "sensitivity_at_90_specificity", "sensitivity_at_95_specificity", "ece",
                   "pixel_auroc")


def fold_numbers(spec: TaskSpec) -> list[int]:
    """Fold numbers of a task: 0..k-1 with k-fold cross-validation, else just 0."""
    return list(range(spec.cv_folds)) if spec.cv_folds else [0]


def run_directory(workdir: str | Path, task: str, model: str) -> Path:
    return Path(workdir) / task / model


def fold_directory(workdir: str | Path, task: str, model: str, fold: int) -> Path:
    return run_directory(workdir, task, model) / f"fold-{fold}"


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold's folder and what it holds; `metrics` is None until the fold has finished."""

    number: int
    directory: Path
    metrics: dict | None
    config: dict | None

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def checkpoints(self) -> Path:
        return self.directory / CHECKPOINTS

    def history(self) -> pd.DataFrame | None:
        return _read_csv(self.directory / HISTORY)

    def predictions(self) -> pd.DataFrame | None:
        return _read_csv(self.directory / PREDICTIONS)

    def split(self) -> pd.DataFrame | None:
        return _read_csv(self.directory / SPLIT)


@dataclasses.dataclass(frozen=True)
class Run:
    """One task x model: its finished folds and summary (None when never trained)."""

    spec: TaskSpec
    model: str
    directory: Path
    folds: list[Fold]  # finished folds only
    summary: dict | None
    notes: list[str]

    @property
    def title(self) -> str:
        return f"{self.spec.name} / {self.model}"

    @property
    def folds_expected(self) -> int:
        return len(fold_numbers(self.spec))

    @property
    def status(self) -> str:
        if not self.folds:
            return "not trained"
        if len(self.folds) < self.folds_expected:
            return f"partial ({len(self.folds)}/{self.folds_expected} folds)"
        return "trained"


def read_fold(workdir: str | Path, task: str, model: str, fold: int,
              notes: list[str] | None = None) -> Fold:
    """A fold's files (unreadable JSON is noted in `notes` and read as missing)."""
    directory = fold_directory(workdir, task, model, fold)
    notes = [] if notes is None else notes
    return Fold(fold, directory, _read_json(directory / METRICS, notes),
                _read_json(directory / CONFIG, notes))


def load_run(workdir: str | Path, spec: TaskSpec, model: str,
             intervals: PooledIntervals | None = None) -> Run:
    """A run's finished folds and its summary, recomputed when summary.json is missing or
    stale, or (given `intervals`) lacks the pooled intervals (written before they existed)."""
    notes: list[str] = []
    folds = [fold for number in fold_numbers(spec)
             if (fold := read_fold(workdir, spec.name, model, number, notes)).finished]
    directory = run_directory(workdir, spec.name, model)
    summary = _read_json(directory / SUMMARY, notes)
    if folds and (summary is None or summary.get("folds_done") != len(folds)):
        # An interrupted run writes no summary.json (or leaves an older one behind).
        notes.append(f"{spec.name} / {model}: summary.json missing or stale; the table uses the "
                     f"{len(folds)} finished folds' metrics.json")
        summary = summarize(spec, model, [fold.metrics for fold in folds],
                            pooled_intervals(spec, folds, intervals))
    elif folds and intervals is not None and not any(
            "pooled_ci" in entry for entry in summary.get("metrics", {}).values()):
        summary = summarize(spec, model, [fold.metrics for fold in folds],
                            pooled_intervals(spec, folds, intervals))
    return Run(spec, model, directory, folds, summary if folds else None, notes)


def trained_models(workdir: str | Path, spec: TaskSpec) -> list[str]:
    """Models other than the task's own that have results in the workdir (e.g. resnet18)."""
    task_dir = Path(workdir) / spec.name
    return sorted(p.name for p in task_dir.glob("*") if p.name not in spec.models and (
        (p / SUMMARY).exists() or any(p.glob(f"fold-*/{METRICS}"))))


def summarize(spec: TaskSpec, model: str, fold_metrics: list[dict],
              pooled: Mapping[str, Any] | None = None) -> dict:
    """summary.json: each SUMMARY_METRICS value's mean, std and per-fold list over the folds.

    With `pooled` (pooled_intervals: metric -> Interval of all folds' test predictions
    together, each image once), each metric also gets `pooled`, its value on those rows, and
    `pooled_ci`, its 95% patient-bootstrap interval.
    """
    summary: dict[str, Any] = {"task": spec.name, "model": model, "kind": spec.kind,
                               "folds_expected": len(fold_numbers(spec)),
                               "folds_done": len(fold_metrics), "metrics": {}}
    for name in SUMMARY_METRICS:
        values = [m[name] for m in fold_metrics if is_number(m.get(name))]
        if values:
            summary["metrics"][name] = {"mean": float(np.mean(values)),
                                        "std": float(np.std(values)), "per_fold": values}
    if fold_metrics:
        summary["n_test"] = int(sum(int(m.get("n_test") or 0) for m in fold_metrics))
    for name, entry in summary["metrics"].items():
        if pooled and name in pooled:
            estimate = pooled[name].estimate
            entry["pooled"] = estimate if is_number(estimate) else None
            entry["pooled_ci"] = pooled[name].to_json()
    return summary


def pooled_intervals(spec: TaskSpec, folds: list[Fold],
                     intervals: PooledIntervals | None) -> Mapping[str, Any] | None:
    """`intervals` of the finished folds' predictions.csv rows concatenated, seeded with the
    run's seed; None without intervals or predictions."""
    predictions = pooled_predictions(folds) if intervals is not None else None
    if predictions is None:
        return None
    return intervals(predictions, spec.classes, seed=run_seed(folds))


def pooled_predictions(folds: list[Fold]) -> pd.DataFrame | None:
    """The finished folds' predictions.csv rows, concatenated (None when none can be read)."""
    frames = [p for fold in folds if fold.finished and (p := fold.predictions()) is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def run_seed(folds: list[Fold]) -> int:
    """The seed the run was trained with (its first fold's config.json), 0 if unknown."""
    configs = [fold.config for fold in folds if fold.config]
    return int(configs[0].get("seed") or 0) if configs else 0


def write_summary(workdir: str | Path, spec: TaskSpec, model: str,
                  intervals: PooledIntervals | None = None) -> dict:
    """Summarise the finished folds into summary.json (and return it); with `intervals`
    (jaxfundus.evaluate.results.headline_intervals) also the pooled intervals."""
    folds = [fold for n in fold_numbers(spec)
             if (fold := read_fold(workdir, spec.name, model, n)).finished]
    summary = summarize(spec, model, [f.metrics for f in folds],
                        pooled_intervals(spec, folds, intervals))
    write_json_atomic(summary, run_directory(workdir, spec.name, model) / SUMMARY)
    return summary


def write_fold_config(directory: Path, record: dict) -> None:
    write_json_atomic(record, directory / CONFIG)


def write_split(directory: Path, split: pd.DataFrame) -> None:
    write_csv_atomic(split, directory / SPLIT)


def write_history(directory: Path, history: list[dict]) -> None:
    write_csv_atomic(pd.DataFrame(history), directory / HISTORY)


def write_fold_results(directory: Path, predictions: pd.DataFrame, metrics: dict) -> None:
    """predictions.csv, then metrics.json: a fold counts as finished once metrics.json exists."""
    write_csv_atomic(predictions, directory / PREDICTIONS)
    write_json_atomic(metrics, directory / METRICS)


def saved_config(workdir: str | Path, task: str, model: str,
                 **overrides: Any) -> RunConfig | None:
    """The RunConfig a run was trained with (from its first fold's config.json), or None.

    `overrides` with value None are ignored; the workdir is always the one given.
    """
    for fold in fold_numbers(load_task(task)):
        record = read_fold(workdir, task, model, fold).config
        if record is not None:
            fields = {f.name for f in dataclasses.fields(RunConfig)}
            values = {k: v for k, v in record.items() if k in fields}
            values.update({k: v for k, v in overrides.items() if v is not None})
            values["workdir"] = str(workdir)
            return RunConfig(**values)
    return None


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not None/NaN): a metric value that was defined."""
    return isinstance(value, int | float) and not isinstance(value, bool) and bool(
        np.isfinite(value))


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        notes.append(f"could not read {path}: {error}")
        return None


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path, dtype={"patient_id": str})
    except (OSError, ValueError):
        return None
