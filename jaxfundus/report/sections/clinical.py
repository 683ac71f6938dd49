"""What a clinical reviewer asks: are the probabilities calibrated, what does a fixed
specificity catch, where did the model look, and is one model better than another."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxfundus.evaluate.comparison import Comparison, compare_runs
from jaxfundus.methods.kinds import kind_of
from jaxfundus.report import page, plots
from jaxfundus.report.load import ReportData
from jaxfundus.runs import SALIENCY, Run, is_number

SALIENCY_MAX_WIDTH = 640  # px; grids are downscaled and reduced to a palette when embedded
SALIENCY_COLOURS = 128
CHANCE = 0.5


def pooled_reliability(diagrams: Sequence[dict]) -> dict:
    """One diagram from the folds' diagrams (same bins): counts add, confidence and accuracy
    are count-weighted means, so it equals the diagram of the pooled test predictions."""
    count = np.sum([np.asarray(d["count"], np.float64) for d in diagrams], axis=0)
    pooled = {"count": count.tolist()}
    for key in ("confidence", "accuracy"):
        weighted = np.sum([np.nan_to_num(np.array(d[key], np.float64)) * np.asarray(d["count"])
                           for d in diagrams], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled[key] = np.where(count > 0, weighted / count, np.nan).tolist()
    filled = count > 0
    gaps = np.abs(np.array(pooled["accuracy"])[filled] - np.array(pooled["confidence"])[filled])
    pooled["ece"] = float(np.sum(count[filled] * gaps) / count.sum()) if count.sum() else None
    return pooled


def calibration(report: ReportData) -> str:
    figures, notes = [], []
    for run in report.trained:
        folds = [f for f in run.folds if f.metrics.get("reliability")]
        if not folds:
            continue
        model = pooled_reliability([f.metrics["reliability"] for f in folds])
        scaled = [f.metrics["calibration"] for f in folds if f.metrics.get("calibration")]
        pooled = f", {len(folds)} folds pooled" if len(folds) > 1 else ""
        if scaled:
            before = pooled_reliability([c["reliability_before"] for c in scaled])
            diagrams = {f"before scaling (ECE {before['ece']:.3f})": before,
                        f"temperature-scaled (ECE {model['ece']:.3f})": model}
            temperatures = ", ".join(f"{c['temperature']:.2f}" for c in scaled)
            caption = (f"{run.title}: test ECE {before['ece']:.3f} before, {model['ece']:.3f} "
                       f"after temperature scaling (T = {temperatures}, fitted on validation)"
                       f"{pooled}")
        else:
            diagrams = {f"test predictions (ECE {model['ece']:.3f})": model}
            caption = f"{run.title}: test ECE {model['ece']:.3f}{pooled}"
        figures.append(page.figure(plots.reliability_diagram(diagrams, run.title), caption))
    if not figures and report.trained:
        notes.append("No trained run stored reliability data (metrics.json `reliability`): "
                     "supervised runs do; evaluate older runs again with `invoke eval`.")
    return page.how_to_read("calibration") + page.gallery(
        figures, notes, "No supervised run has been trained.")


def operating_points(report: ReportData) -> str:
    rows = []
    for run in report.trained:
        targets = kind_of(run.spec).roc_targets(run.spec.classes)
        scale = targets[0][3] if len(targets) == 1 else "?"
        for fold in run.folds:
            for point in fold.metrics.get("operating_points") or []:
                rows.append({
                    "run": run.title, "fold": fold.number,
                    "target specificity": f"{point['target_specificity']:.0%}",
                    "threshold (validation)": f"{point['threshold']:.4g} on {scale}",
                    "validation sens / spec": _rates(point, "val"),
                    "test sensitivity": _rate(point["test_sensitivity"]),
                    "test specificity": _rate(point["test_specificity"])})
    if not rows:
        return page.how_to_read("operating_points") + page.empty(
            "No run stored operating points: binary, normal-vs-disease and anomaly runs do.")
    return page.how_to_read("operating_points") + page.html_table(pd.DataFrame(rows))


def _rate(value) -> str:
    return f"{value:.3f}" if is_number(value) else "undefined"


def _rates(point: dict, split: str) -> str:
    return f"{_rate(point[f'{split}_sensitivity'])} / {_rate(point[f'{split}_specificity'])}"


def saliency(report: ReportData) -> str:
    figures, notes = [], []
    for run in report.trained:
        grids = sorted(run.directory.glob(f"fold-*/{SALIENCY}"))
        if not grids:
            continue
        png = page.embeddable_png(grids[0], SALIENCY_MAX_WIDTH, colours=SALIENCY_COLOURS)
        caption = f"{run.title}, {grids[0].parent.name}: test images and their Grad-CAM maps"
        if png is None:
            notes.append(f"{caption}: not a readable image")
        else:
            figures.append(page.figure(png, caption))
    table = _localisation_table(report.trained)
    return (page.how_to_read("saliency")
            + page.gallery(figures, notes, "No saliency grids (saliency.png) in the run "
                                           "folders: train or evaluate a supervised task.")
            + ("<h3>Saliency pixel AUROC against the lesion masks</h3>"
               + page.html_table(table) if len(table) else ""))


def _localisation_table(trained: list[Run]) -> pd.DataFrame:
    rows = []
    for run in trained:
        per_class: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for fold in run.folds:
            for name, value in (fold.metrics.get("saliency_pixel_auroc") or {}).items():
                per_class.setdefault(name, [])
                if is_number(value):
                    per_class[name].append(value)
                counts[name] = counts.get(name, 0) + int(
                    (fold.metrics.get("n_saliency_images") or {}).get(name) or 0)
        for name, values in per_class.items():
            if not values:
                continue
            spread = f" ± {np.std(values):.3f}" if len(values) > 1 else ""
            rows.append({"run": run.title, "class": name,
                         "pixel AUROC": f"{np.mean(values):.3f}{spread}",
                         "chance": f"{CHANCE:.1f}", "images with masks": counts[name],
                         "folds": len(values)})
    return pd.DataFrame(rows)


def comparisons(report: ReportData) -> str:
    rows, notes = [], []
    by_task: dict[str, list[Run]] = {}
    for run in report.trained:
        by_task.setdefault(run.spec.name, []).append(run)
    for task_runs in by_task.values():
        if len(task_runs) < 2:
            continue
        targets = kind_of(task_runs[0].spec).roc_targets(task_runs[0].spec.classes)
        for found in compare_runs(task_runs, targets):
            if isinstance(found, Comparison):
                rows.append(_comparison_row(found))
            else:
                notes.append(found)
    macro = any(row["DeLong p"] == "-" for row in rows)
    note = ("<p>Macro AUROC (multi-class tasks) averages per-class AUROCs and has no DeLong "
            "variance: its difference has the paired bootstrap interval only.</p>"
            if macro else "")
    if not rows:
        return page.how_to_read("comparisons") + page.gallery(
            [], notes, "No task has two trained models to compare.")
    return (page.how_to_read("comparisons") + page.html_table(pd.DataFrame(rows)) + note
            + "".join(page.empty(line) for line in notes))


def _comparison_row(found: Comparison) -> dict:
    interval = ("undefined" if found.difference_ci is None else
                f"[{found.difference_ci[0]:+.3f}, {found.difference_ci[1]:+.3f}]")
    return {"task": found.task, "model a": found.model_a, "model b": found.model_b,
            "metric": f"{found.metric} ({found.positive})",
            "a": f"{found.auroc_a:.3f}", "b": f"{found.auroc_b:.3f}",
            "a - b [95% CI]": f"{found.difference:+.3f} {interval}",
            "DeLong p": "-" if found.p_value is None else f"{found.p_value:.3g}",
            "images / patients": f"{found.n_images} / {found.n_patients}"}
