"""Run one task x model of the matrix: select images, split by patient, train each fold through
the shared loop, and write the results contract.

    WORKDIR/<task>/<model>/fold-<k>/{checkpoints/, history.csv, split.csv, predictions.csv,
                                      metrics.json, config.json}
    WORKDIR/<task>/<model>/summary.json   (mean and std of each metric over folds)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.config import RunConfig, TaskSpec, load_task
from jaxfundus.data.selection import TaskExamples, select_examples
from jaxfundus.data.splits import TEST, TRAIN, VAL, assign_anomaly_splits, assign_splits
from jaxfundus.evaluate.reconstructions import localisation_auroc, write_reconstructions
from jaxfundus.evaluate.results import anomaly_results, supervised_results
from jaxfundus.io import write_csv_atomic, write_json_atomic
from jaxfundus.provenance import git_commit, package_versions
from jaxfundus.train.loop import SplitData, Trainer
from jaxfundus.train.mesh import DataParallel
from jaxfundus.train.methods import make_method

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc", "top1_accuracy",
                   "exact_match_accuracy", "auroc", "auprc", "f1", "sensitivity_at_90_specificity",
                   "sensitivity_at_95_specificity")


def run_dir(workdir: str | Path, task: str, model: str, fold: int) -> Path:
    return Path(workdir) / task / model / f"fold-{fold}"


def task_folds(spec: TaskSpec) -> list[int]:
    """Fold numbers of a task: 0..k-1 with k-fold cross-validation, else just 0."""
    return list(range(spec.cv_folds)) if spec.cv_folds else [0]


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """The images of one fold and their split (train/val/test) assignment."""

    fold: int
    examples: TaskExamples
    split: np.ndarray

    def frame(self, name: str) -> pd.DataFrame:
        return self.examples.frame[self.split == name]


def plan_folds(spec: TaskSpec, config: RunConfig, index: pd.DataFrame) -> list[FoldPlan]:
    """Select the task's images once, then assign patient-grouped splits for every fold."""
    examples = select_examples(index, spec, config.seed)
    frame = examples.frame
    plans = []
    for fold in task_folds(spec):
        if spec.kind == "anomaly":
            split = assign_anomaly_splits(frame["patient_id"].to_numpy(),
                                          frame["label"].to_numpy(), seed=config.seed,
                                          test_set=config.anomaly_test_set,
                                          test_fraction=config.test_fraction,
                                          val_fraction=config.val_fraction)
        else:
            split = assign_splits(frame["patient_id"].to_numpy(), frame["stratum"].to_numpy(),
                                  seed=config.seed, folds=spec.cv_folds, fold=fold,
                                  test_fraction=config.test_fraction,
                                  val_fraction=config.val_fraction)
        plans.append(FoldPlan(fold, examples, split))
    return plans


def split_data(source: Any, frame: pd.DataFrame, examples: TaskExamples) -> SplitData:
    """Rows of one split -> SplitData: int32 class ids, or float32 multi-hot for multi-label."""
    targets = frame[examples.label_columns].to_numpy()
    if targets.shape[1] == 1:
        return SplitData(source, frame["index"].to_numpy(), targets[:, 0].astype(np.int32))
    return SplitData(source, frame["index"].to_numpy(), targets.astype(np.float32))


def train_task(config: RunConfig, dataset, *, parallel: DataParallel | None = None,
               retrain: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) every fold of `config.task` x `config.model`; returns summary.json."""
    spec = load_task(config.task)
    parallel = parallel or DataParallel()
    plans = plan_folds(spec, config, dataset.index)
    examples = plans[0].examples
    log(f"{spec.name} / {config.model}: {len(examples.frame)} images of "
        f"{examples.frame['patient_id'].nunique()} patients, classes {', '.join(spec.classes)}; "
        f"dropped by the selection rule: {examples.dropped or 'none'}")
    n_train = max(int((p.split == TRAIN).sum()) for p in plans)
    method = make_method(spec, config, n_train)
    trainer = Trainer(method, config, parallel)
    for plan in plans:
        directory = run_dir(config.workdir, spec.name, config.model, plan.fold)
        if (directory / "metrics.json").exists() and not retrain:
            log(f"fold {plan.fold}: already trained ({directory}); pass --retrain to train again")
            continue
        if retrain and directory.exists():
            shutil.rmtree(directory)
        _train_fold(trainer, spec, plan, dataset, directory, log)
        parallel.barrier(f"fold-{plan.fold}-done")
    return write_summary(config, spec) if parallel.is_primary else {}


def _train_fold(trainer: Trainer, spec: TaskSpec, plan: FoldPlan, dataset, directory: Path,
                log: Callable[[str], None]) -> None:
    config = trainer.config
    directory.mkdir(parents=True, exist_ok=True)
    frames = {name: plan.frame(name) for name in (TRAIN, VAL, TEST)}
    counts = {name: len(f) for name, f in frames.items()}
    log(f"fold {plan.fold}: train {counts[TRAIN]}, val {counts[VAL]}, test {counts[TEST]} "
        f"images (patients disjoint) -> {directory}")
    if trainer.parallel.is_primary:
        write_csv_atomic(_split_table(plan), directory / "split.csv")
        write_json_atomic(_config_record(config, spec, plan, dataset, counts),
                          directory / "config.json")
    data = {name: split_data(dataset.source, f, plan.examples) for name, f in frames.items()}
    result = trainer.fit(data[TRAIN], data[VAL], directory, log=log)
    evaluate_fold(trainer, spec, plan, dataset, directory, result.state)


def evaluate_fold(trainer: Trainer, spec: TaskSpec, plan: FoldPlan, dataset, directory: Path,
                  state: Any) -> dict:
    """Score the test split with `state`; write predictions.csv and metrics.json."""
    test_frame = plan.frame(TEST)
    test = split_data(dataset.source, test_frame, plan.examples)
    outputs = trainer.predict(state, test)
    if spec.kind == "anomaly":
        val = split_data(dataset.source, plan.frame(VAL), plan.examples)
        val_outputs = trainer.predict(state, val)
        predictions, metrics = anomaly_results(
            test_frame, outputs["score"], val.targets, val_outputs["score"],
            criterion=trainer.config.threshold_criterion,
            manual_threshold=trainer.config.threshold)
        size = trainer.config.image_size
        metrics.update(localisation_auroc(trainer.method, state, dataset, test_frame, size))
        if trainer.parallel.is_primary:
            write_reconstructions(trainer.method, state, dataset, test_frame, size,
                                  directory / "reconstructions.png")
    else:
        predictions, metrics = supervised_results(test_frame, outputs["probs"], spec.classes,
                                                  multi_label=spec.kind == "multi-label")
    metrics.update(task=spec.name, model=trainer.config.model, fold=plan.fold,
                   preset=trainer.config.preset)
    if trainer.parallel.is_primary:
        write_csv_atomic(predictions, directory / "predictions.csv")
        write_json_atomic(metrics, directory / "metrics.json")
    return metrics


def _split_table(plan: FoldPlan) -> pd.DataFrame:
    frame = plan.examples.frame
    return pd.DataFrame({"filename": frame["filename"], "patient_id": frame["patient_id"],
                         "split": plan.split})


def _config_record(config: RunConfig, spec: TaskSpec, plan: FoldPlan, dataset,
                   counts: dict[str, int]) -> dict:
    return {
        **config.to_dict(),
        "fold": plan.fold,
        "folds": spec.cv_folds,
        "kind": spec.kind,
        "classes": list(spec.classes),
        "split_counts": counts,
        "dropped_by_selection": plan.examples.dropped,
        "data": dataset.describe(),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def write_summary(config: RunConfig, spec: TaskSpec) -> dict:
    """Mean and std over the folds that have metrics.json -> summary.json (and return it)."""
    fold_metrics = []
    for fold in task_folds(spec):
        path = run_dir(config.workdir, spec.name, config.model, fold) / "metrics.json"
        if path.exists():
            fold_metrics.append(json.loads(path.read_text()))
    summary: dict[str, Any] = {"task": spec.name, "model": config.model, "kind": spec.kind,
                               "folds_expected": len(task_folds(spec)),
                               "folds_done": len(fold_metrics), "metrics": {}}
    for name in SUMMARY_METRICS:
        values = [m[name] for m in fold_metrics if isinstance(m.get(name), int | float)]
        if values:
            summary["metrics"][name] = {"mean": float(np.mean(values)),
                                        "std": float(np.std(values)), "per_fold": values}
    if fold_metrics:
        summary["n_test"] = int(sum(m["n_test"] for m in fold_metrics))
    write_json_atomic(summary, Path(config.workdir) / spec.name / config.model / "summary.json")
    return summary


def saved_config(workdir: str | Path, task: str, model: str, **overrides: Any) -> RunConfig | None:
    """The RunConfig a run was trained with (from its first fold's config.json), or None."""
    spec = load_task(task)
    for fold in task_folds(spec):
        path = run_dir(workdir, task, model, fold) / "config.json"
        if path.exists():
            record = json.loads(path.read_text())
            fields = {f.name for f in dataclasses.fields(RunConfig)}
            values = {k: v for k, v in record.items() if k in fields}
            values.update({k: v for k, v in overrides.items() if v is not None})
            values["workdir"] = str(workdir)
            return RunConfig(**values)
    return None


def evaluate_task(config: RunConfig, dataset, *, parallel: DataParallel | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """Re-score each trained fold's best checkpoint on its test split; rewrite the results."""
    spec = load_task(config.task)
    parallel = parallel or DataParallel()
    plans = plan_folds(spec, config, dataset.index)
    method = make_method(spec, config, max(int((p.split == TRAIN).sum()) for p in plans))
    trainer = Trainer(method, config, parallel)
    for plan in plans:
        directory = run_dir(config.workdir, spec.name, config.model, plan.fold)
        if not (directory / "checkpoints").is_dir():
            log(f"fold {plan.fold}: not trained ({directory})")
            continue
        _check_same_split(plan, directory)
        train = split_data(dataset.source, plan.frame(TRAIN), plan.examples)
        state = trainer.restore_best(directory, train.targets)
        metrics = evaluate_fold(trainer, spec, plan, dataset, directory, state)
        log(f"fold {plan.fold}: re-evaluated best checkpoint on {metrics['n_test']} test images")
    return write_summary(config, spec) if parallel.is_primary else {}


def _check_same_split(plan: FoldPlan, directory: Path) -> None:
    from jaxfundus.data.top_source import DataError

    saved = pd.read_csv(directory / "split.csv", dtype={"patient_id": str})
    if not np.array_equal(saved["split"].to_numpy(), plan.split.astype(str)) or not np.array_equal(
            saved["filename"].to_numpy(), plan.examples.frame["filename"].to_numpy()):
        raise DataError(f"the data no longer gives the split saved in {directory / 'split.csv'}; "
                        "evaluate with the data the run was trained on")
