"""Run one task x model of the matrix: select images, split by patient, train each fold through
the shared loop, and write the results (layout: jaxfundus.runs).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from jaxfundus import runs
from jaxfundus.config import RunConfig, TaskSpec, load_task
from jaxfundus.data.datasets import Dataset
from jaxfundus.data.splits import TEST, TRAIN, VAL
from jaxfundus.data.top_source import DataError
from jaxfundus.evaluate.results import headline_intervals
from jaxfundus.methods import make_method
from jaxfundus.methods.base import FoldData
from jaxfundus.methods.kinds import kind_of
from jaxfundus.provenance import git_commit, package_versions
from jaxfundus.run_lock import run_lock
from jaxfundus.train.loop import Trainer
from jaxfundus.train.mesh import DataParallel

Log = Callable[[str], None]


def plan_folds(spec: TaskSpec, config: RunConfig, dataset: Dataset) -> list[FoldData]:
    """Select the task's images once, then assign patient-grouped splits for every fold.

    Raises ConfigError before any training when a fold's splits cannot serve the task.
    """
    kind = kind_of(spec)
    examples = kind.select(dataset.index, spec, config.seed)
    folds = []
    for fold in runs.fold_numbers(spec):
        split = kind.assign_split(examples, spec, config, fold, dataset)
        kind.check_split(examples, split, fold)
        folds.append(FoldData(fold, kind, examples, split, dataset))
    return folds


def _trainer(spec: TaskSpec, config: RunConfig, folds: list[FoldData],
             parallel: DataParallel) -> Trainer:
    n_train = max(int((f.split == TRAIN).sum()) for f in folds)
    return Trainer(make_method(spec, config, max(1, n_train // config.batch_size)), config,
                   parallel)


def train_task(config: RunConfig, dataset: Dataset, *, parallel: DataParallel | None = None,
               retrain: bool = False, log: Log = print) -> dict:
    """Train (or resume) every fold of `config.task` x `config.model`; returns summary.json."""
    spec = load_task(config.task)
    parallel = parallel or DataParallel()
    folds = plan_folds(spec, config, dataset)
    examples = folds[0].examples
    log(f"{spec.name} / {config.model}: {len(examples.frame)} images of "
        f"{examples.frame['patient_id'].nunique()} patients, classes {', '.join(spec.classes)}; "
        f"dropped by the selection rule: {examples.dropped or 'none'}")
    for note in folds[0].kind.split_notes(config, dataset):
        log(note)
    trainer = _trainer(spec, config, folds, parallel)
    with _writer_lock(config, spec, parallel, log):
        for fold in folds:
            directory = runs.fold_directory(config.workdir, spec.name, config.model, fold.fold)
            if runs.read_fold(config.workdir, spec.name, config.model, fold.fold).finished \
                    and not retrain:
                log(f"fold {fold.fold}: already trained ({directory}); pass --retrain to train "
                    "again")
                continue
            if retrain and directory.exists():
                shutil.rmtree(directory)
            _train_fold(trainer, spec, fold, directory, log)
            parallel.barrier(f"fold-{fold.fold}-done")
        if not parallel.is_primary:
            return {}
        return runs.write_summary(config.workdir, spec, config.model, headline_intervals)


def _writer_lock(config: RunConfig, spec: TaskSpec, parallel: DataParallel, log: Log):
    """The run folder's lock, held by the process that writes it (the primary)."""
    if not parallel.is_primary:
        return contextlib.nullcontext()
    return run_lock(runs.run_directory(config.workdir, spec.name, config.model), log)


def _train_fold(trainer: Trainer, spec: TaskSpec, fold: FoldData, directory: Path,
                log: Log) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    counts = {name: int((fold.split == name).sum()) for name in (TRAIN, VAL, TEST)}
    log(f"fold {fold.fold}: train {counts[TRAIN]}, val {counts[VAL]}, test {counts[TEST]} "
        f"images (patients disjoint) -> {directory}")
    if trainer.parallel.is_primary:
        runs.write_split(directory, _split_table(fold))
        runs.write_fold_config(directory, _config_record(trainer.config, spec, fold, counts,
                                                         _start(trainer.method)))
    result = trainer.fit(fold.data(TRAIN), fold.data(VAL), directory, log=log)
    score_fold(trainer, spec, fold, directory, result.state)


def score_fold(trainer: Trainer, spec: TaskSpec, fold: FoldData, directory: Path,
               state) -> dict:
    """Score the test split with `state`; write predictions.csv and metrics.json."""
    primary = trainer.parallel.is_primary
    predictions, metrics = trainer.method.score_fold(trainer, state, fold, directory, primary)
    metrics.update(task=spec.name, model=trainer.config.model, fold=fold.fold,
                   preset=trainer.config.preset)
    if primary:
        runs.write_fold_results(directory, predictions, metrics)
    return metrics


def _split_table(fold: FoldData) -> pd.DataFrame:
    frame = fold.examples.frame
    return pd.DataFrame({"filename": frame["filename"], "patient_id": frame["patient_id"],
                         "split": fold.split})


def _start(method) -> dict:
    """How the method's model starts (init, weights file, its SHA-256 and source)."""
    provenance = getattr(method, "provenance", None)
    return provenance() if provenance else {"init": "scratch"}


def _config_record(config: RunConfig, spec: TaskSpec, fold: FoldData,
                   counts: dict[str, int], start: dict) -> dict:
    return {
        **config.to_dict(),
        "start": start,
        "fold": fold.fold,
        "folds": spec.cv_folds,
        "kind": spec.kind,
        "classes": list(spec.classes),
        "split_counts": counts,
        "dropped_by_selection": fold.examples.dropped,
        "data": fold.dataset.describe(),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def evaluate_task(config: RunConfig, dataset: Dataset, *, parallel: DataParallel | None = None,
                  log: Log = print) -> dict:
    """Re-score each trained fold's best checkpoint on its test split; rewrite the results."""
    spec = load_task(config.task)
    parallel = parallel or DataParallel()
    folds = plan_folds(spec, config, dataset)
    trainer = _trainer(spec, config, folds, parallel)
    with _writer_lock(config, spec, parallel, log):
        for fold in folds:
            saved = runs.read_fold(config.workdir, spec.name, config.model, fold.fold)
            if not saved.checkpoints.is_dir():
                log(f"fold {fold.fold}: not trained ({saved.directory})")
                continue
            _check_same_split(fold, saved)
            state = trainer.restore_best(saved.directory)
            metrics = score_fold(trainer, spec, fold, saved.directory, state)
            log(f"fold {fold.fold}: re-evaluated best checkpoint on {metrics['n_test']} test "
                "images")
        if not parallel.is_primary:
            return {}
        return runs.write_summary(config.workdir, spec, config.model, headline_intervals)


def _check_same_split(fold: FoldData, saved: runs.Fold) -> None:
    table = saved.split()
    if table is None or not np.array_equal(table["split"].to_numpy(),
                                           fold.split.astype(str)) or not np.array_equal(
            table["filename"].to_numpy(), fold.examples.frame["filename"].to_numpy()):
        raise DataError(f"the data no longer gives the split saved in "
                        f"{saved.directory / runs.SPLIT}; evaluate with the data the run was "
                        "trained on")
