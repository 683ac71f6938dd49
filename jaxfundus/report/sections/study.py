"""The study's figures redone from the runs: training curves, folds, normal vs each disease,
ROC curves, confusion matrices, the anomaly detectors' reconstructions and the EDA figures."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.data.eda import FIGURES as EDA_FIGURES
from jaxfundus.methods.kinds import kind_of
from jaxfundus.report import page, plots
from jaxfundus.report.load import ReportData
from jaxfundus.report.tables import METRIC_TITLES, fold_baseline, mean_of
from jaxfundus.runs import Fold, Run, is_number

# The study's figure each section redoes, by task.
CURVE_FIGURES = {"binary": "Fig 7", "three-class": "Fig 8", "ten-class": "Fig 11"}
CV_FIGURES = {"three-class": "Figs 9-10", "five-rare": "Fig 13"}
ROC_FIGURES = {"ganomaly": "Fig 5"}
RECONSTRUCTION_FIGURES = {"vae": "Fig 6"}


def _study_figure(figures: dict[str, str], task: str) -> str:
    return f" (study {figures[task]})" if task in figures else ""


def curves(report: ReportData) -> str:
    figures = []
    for run in report.trained:
        histories = {f.number: h for f in run.folds
                     if (h := f.history()) is not None and len(h)}
        png = plots.training_curves(histories, run.title) if histories else None
        if png is not None:
            figures.append(page.figure(png, f"{run.title}: training and validation per epoch"
                                       + _study_figure(CURVE_FIGURES, run.spec.name)))
    return page.how_to_read("curves") + page.gallery(figures, [],
                                                     "No trained run has a history.csv.")


def _fold_series(run: Run, folds: list[Fold]) -> dict[str, list[list[float]]]:
    """Metric title -> per fold, [value] (or [] where the metric is undefined)."""
    return {METRIC_TITLES[column]: [[f.metrics[source]] if is_number(f.metrics.get(source))
                                    else [] for f in folds]
            for column, source in kind_of(run.spec).table_metrics.items()}


def cross_validation(report: ReportData) -> str:
    figures = []
    for run in (r for r in report.trained if r.spec.cv_folds):
        series = _fold_series(run, run.folds)
        for per_fold in series.values():
            per_fold.append([v for values in per_fold for v in values])  # the "all folds" bar
        baselines = [fold_baseline(run, f) for f in run.folds]
        png = plots.grouped_bars(
            [f"fold {f.number}" for f in run.folds] + ["all folds"], series,
            f"{run.title}: test metrics per fold", baseline=[*baselines, mean_of(baselines)],
            baseline_label=f"baseline ({kind_of(run.spec).baseline_name})")
        figures.append(page.figure(png, f"{run.title}: {run.status}, {len(run.folds)} of "
                                   f"{run.folds_expected} folds"
                                   + _study_figure(CV_FIGURES, run.spec.name)))
    return page.how_to_read("cv") + page.gallery(figures, [],
                                                 "No cross-validated task has been trained.")


def per_disease(report: ReportData) -> str:
    disease_runs = [(disease, run) for run in report.runs
                    if (disease := kind_of(run.spec).disease_vs_normal(run.spec))]
    figures = []
    for model in dict.fromkeys(run.model for _, run in disease_runs):
        by_disease = {disease: run for disease, run in disease_runs if run.model == model}
        if not any(run.folds for run in by_disease.values()):
            continue
        series: dict[str, list[list[float]]] = {
            METRIC_TITLES[column]: []
            for column in kind_of(next(iter(by_disease.values())).spec).table_metrics}
        for run in by_disease.values():
            for title, per_fold in _fold_series(run, run.folds).items():
                series[title].append([v for values in per_fold for v in values])
        baselines = [mean_of(fold_baseline(run, f) for f in run.folds)
                     for run in by_disease.values()]
        png = plots.grouped_bars(list(by_disease), series,
                                 f"normal vs each disease, {model}: test metrics over folds",
                                 baseline=baselines, baseline_label="baseline (majority class)")
        trained = sum(bool(run.folds) for run in by_disease.values())
        figures.append(page.figure(png, f"{model}: {trained} of {len(by_disease)} "
                                   "normal-vs-disease tasks trained"))
    return page.how_to_read("per_disease") + page.gallery(
        figures, [], "None of the normal-vs-disease tasks has been trained "
                     "(invoke train --task=rare-vs-normal).")


def roc(report: ReportData) -> str:
    figures, notes = [], []
    for run in report.trained:
        curves_, how = _roc_inputs(run)
        png = plots.roc_curves(curves_, run.title)
        if png is None:
            notes.append(f"{run.title}: no ROC curve (predictions.csv missing or its test "
                         "labels hold one class only).")
        else:
            figures.append(page.figure(png, f"{run.title}: ROC on the test split{how}"
                                       + _study_figure(ROC_FIGURES, run.spec.name)))
    return page.how_to_read("roc") + page.gallery(figures, notes, "No run has been trained.")


def _roc_inputs(run: Run) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    """(curves as (label, y_bin, score), a note on what they are) from predictions.csv.

    One positive class (binary, anomaly): a curve per fold plus all folds pooled; several
    classes: one-vs-rest per class on the pooled predictions.
    """
    predictions = {f.number: p for f in run.folds if (p := f.predictions()) is not None}
    targets = kind_of(run.spec).roc_targets(run.spec.classes)
    if len(targets) == 1:
        frames = {f"fold {k}": p for k, p in predictions.items()}
        if len(predictions) > 1:
            frames["all folds pooled"] = pd.concat(predictions.values())
        found = [_roc_input(label, frame, *targets[0][1:]) for label, frame in frames.items()]
        how = f", {targets[0][0]} = positive"
    else:
        pooled = pd.concat(predictions.values()) if predictions else pd.DataFrame()
        found = [_roc_input(name, pooled, *target) for name, *target in targets]
        how = ", one-vs-rest per class" + (", folds pooled" if len(predictions) > 1 else "")
    return [curve for curve in found if curve is not None], how


def _roc_input(label: str, frame: pd.DataFrame, truth: str, positive: Any,
               score: str) -> tuple[str, np.ndarray, np.ndarray] | None:
    if not {truth, score} <= set(frame):
        return None
    frame = frame.dropna(subset=[truth, score])
    return label, (frame[truth] == positive).to_numpy(), frame[score].to_numpy(dtype=np.float64)


def confusion(report: ReportData) -> str:
    figures, notes = [], []
    for run in report.trained:
        matrix, classes, how = kind_of(run.spec).confusion(run)
        if matrix is None:
            notes.append(f"{run.title}: {how}.")
            continue
        figures.append(page.figure(plots.confusion_matrix(matrix, classes, run.title),
                                   f"{run.title}: test counts{how}"))
    return page.how_to_read("confusion") + page.gallery(figures, notes, "No run has been trained.")


def reconstructions(report: ReportData) -> str:
    figures, notes = [], []
    for run in report.runs:
        for path in sorted(run.directory.glob("fold-*/*recon*.png")):
            caption = (f"{run.title}, {path.parent.name}: {path.name}"
                       + _study_figure(RECONSTRUCTION_FIGURES, run.spec.name))
            png = page.embeddable_png(path)
            if png is None:
                notes.append(f"{caption}: not a readable image")
            else:
                figures.append(page.figure(png, caption))
    return page.how_to_read("reconstructions") + page.gallery(
        figures, notes, "No reconstruction images (*recon*.png) in the run folders: train the "
                        "ganomaly or vae task.")


def eda(report: ReportData) -> str:
    eda_dir: Path = report.workdir / "eda"
    figures, notes = [], []
    for path in sorted(eda_dir.glob("*.png")):
        png = page.embeddable_png(path)
        if png is None:
            notes.append(f"{path.name}: not a readable image")
        else:
            figures.append(page.figure(png, EDA_FIGURES.get(path.name, path.name)))
    summary = eda_dir / "summary.md"
    text = (f"<h3>summary.md</h3><pre>{html.escape(summary.read_text())}</pre>"
            if summary.exists() else "")
    return page.how_to_read("eda") + page.gallery(
        figures, notes, f"No EDA figures in {eda_dir}: run `invoke eda --workdir=...`.") + text
