"""The report: a summary table of the whole task matrix (summary.csv, summary.md) and one
self-contained HTML page with the study's figures redone from the results contract.

Reads only what runs wrote (WORKDIR/<task>/<model>/{summary.json, fold-<k>/...}, WORKDIR/eda/);
every task x model of the matrix gets a row, trained or not.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from jaxfundus.config import TaskSpec, load_task, task_names
from jaxfundus.data.eda import FIGURES as EDA_FIGURES
from jaxfundus.data.labels import DISEASES, NORMAL
from jaxfundus.evaluate import plots
from jaxfundus.io import write_csv_atomic, write_text_atomic
from jaxfundus.metrics import confusion_matrix

REPORT_DIR = "report"
# Table column -> the summary.json metric it shows, per task kind.
TABLE_METRICS = {
    "single-label": {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
                     "auroc": "macro_auroc"},
    "multi-label": {"auroc": "macro_auroc", "top1_accuracy": "top1_accuracy"},
    "anomaly": {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
                "auroc": "auroc", "f1": "f1"},
}
METRIC_TITLES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "auroc": "AUROC", "top1_accuracy": "top-1 accuracy", "f1": "F1"}
BASELINE_NAMES = {"single-label": "majority class", "multi-label": "most frequent class, top-1",
                  "anomaly": "all anomalous"}
CSV_COLUMNS = ["task", "model", "kind", "status", "folds_done", "folds_expected", "n_test",
               *(name for metric in METRIC_TITLES for name in (metric, f"{metric}_std")),
               "baseline", "baseline_accuracy", "baseline_f1", "study"]
# The study's figure each section redoes, by task.
CURVE_FIGURES = {"binary": "Fig 7", "three-class": "Fig 8", "ten-class": "Fig 11"}
CV_FIGURES = {"three-class": "Figs 9-10", "five-rare": "Fig 13"}
ROC_FIGURES = {"ganomaly": "Fig 5"}
RECONSTRUCTION_FIGURES = {"vae": "Fig 6"}
EMBEDDED_IMAGE_MAX_WIDTH = 1000  # px; larger recon/EDA images are downscaled before embedding


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold that finished: its folder, metrics.json and config.json (None if missing)."""

    number: int
    directory: Path
    metrics: dict
    config: dict | None

    def history(self) -> pd.DataFrame | None:
        return _read_csv(self.directory / "history.csv")

    def predictions(self) -> pd.DataFrame | None:
        return _read_csv(self.directory / "predictions.csv")


@dataclasses.dataclass(frozen=True)
class Run:
    """One task x model: its finished folds and summary (None when never trained)."""

    spec: TaskSpec
    model: str
    directory: Path
    folds: list[Fold]
    summary: dict | None
    notes: list[str]

    @property
    def title(self) -> str:
        return f"{self.spec.name} / {self.model}"

    @property
    def folds_expected(self) -> int:
        return self.spec.cv_folds or 1

    @property
    def status(self) -> str:
        if not self.folds:
            return "not trained"
        if len(self.folds) < self.folds_expected:
            return f"partial ({len(self.folds)}/{self.folds_expected} folds)"
        return "trained"


def load_runs(workdir: str | Path) -> list[Run]:
    """Every task x model of the matrix, plus extra models found trained in the workdir."""
    workdir = Path(workdir)
    runs = []
    for task in task_names():
        spec = load_task(task)
        extra = sorted(p.name for p in (workdir / task).glob("*") if p.name not in spec.models
                       and ((p / "summary.json").exists() or any(p.glob("fold-*/metrics.json"))))
        runs.extend(_load_run(workdir / task / model, spec, model)
                    for model in (*spec.models, *extra))
    return runs


def _load_run(directory: Path, spec: TaskSpec, model: str) -> Run:
    notes: list[str] = []
    folds = []
    for number in range(spec.cv_folds or 1):
        fold_dir = directory / f"fold-{number}"
        metrics = _read_json(fold_dir / "metrics.json", notes)
        if metrics is not None:
            folds.append(Fold(number, fold_dir, metrics, _read_json(fold_dir / "config.json",
                                                                    notes)))
    summary = _read_json(directory / "summary.json", notes)
    if folds and (summary is None or summary.get("folds_done") != len(folds)):
        # An interrupted run writes no summary.json (or leaves an older one behind).
        notes.append(f"{spec.name} / {model}: summary.json missing or stale; the table uses the "
                     f"{len(folds)} finished folds' metrics.json")
        summary = _summary_from_folds(folds)
    return Run(spec, model, directory, folds, summary if folds else None, notes)


def _summary_from_folds(folds: list[Fold]) -> dict:
    """summary.json's shape, for the table's metrics, from the folds' metrics.json."""
    metrics = {}
    for name in {source for table in TABLE_METRICS.values() for source in table.values()}:
        values = [f.metrics[name] for f in folds if _is_number(f.metrics.get(name))]
        if values:
            metrics[name] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                             "per_fold": values}
    return {"folds_done": len(folds), "metrics": metrics,
            "n_test": sum(int(f.metrics.get("n_test") or 0) for f in folds)}


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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [v for v in values if _is_number(v)]
    return float(np.mean(numbers)) if numbers else None


# ---------------------------------------------------------------------------------------------
# The table


def summary_table(workdir: str | Path) -> pd.DataFrame:
    """One row per task x model (CSV_COLUMNS): status, folds, n_test, each metric's mean and std
    over folds (from summary.json), the trivial baseline and the study's reported figure."""
    return _table(load_runs(workdir))


def _table(runs: list[Run]) -> pd.DataFrame:
    table = pd.DataFrame([_table_row(run) for run in runs], columns=CSV_COLUMNS)
    return table.astype({"folds_done": "Int64", "folds_expected": "Int64", "n_test": "Int64"})


def _table_row(run: Run) -> dict:
    row = {"task": run.spec.name, "model": run.model, "kind": run.spec.kind,
           "status": run.status, "folds_done": len(run.folds),
           "folds_expected": run.folds_expected, "study": run.spec.study.get(run.model, "")}
    if run.summary is None:
        return row
    row["n_test"] = run.summary.get("n_test")
    metrics = run.summary.get("metrics", {})
    for column, source in TABLE_METRICS[run.spec.kind].items():
        if source in metrics:
            row[column] = metrics[source]["mean"]
            row[f"{column}_std"] = metrics[source]["std"]
    row["baseline"] = BASELINE_NAMES[run.spec.kind]
    row["baseline_accuracy"] = _mean(fold_baseline(run, fold) for fold in run.folds)
    if run.spec.kind == "anomaly":
        row["baseline_f1"] = _mean((f.metrics.get("baseline_all_anomalous") or {}).get("f1")
                                   for f in run.folds)
    return row


def fold_baseline(run: Run, fold: Fold) -> float | None:
    """The accuracy of the trivial predictor on this fold's test split (see BASELINE_NAMES)."""
    if run.spec.kind == "single-label":
        return fold.metrics.get("baseline_majority_accuracy")
    if run.spec.kind == "anomaly":
        return (fold.metrics.get("baseline_all_anomalous") or {}).get("accuracy")
    return _majority_top1_accuracy(fold.predictions(), run.spec.classes)


def _majority_top1_accuracy(predictions: pd.DataFrame | None,
                            classes: tuple[str, ...]) -> float | None:
    """Top-1 accuracy of always answering the most frequent class (normal = no disease)."""
    columns = [f"label_{c}" for c in classes]
    if predictions is None or len(predictions) == 0 or not set(columns) <= set(predictions):
        return None
    labels = predictions[columns].to_numpy().astype(bool)
    true_classes = np.column_stack([~labels.any(axis=1), labels])
    return float(true_classes[:, true_classes.sum(axis=0).argmax()].mean())


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """summary_table for people: 'mean ± std' text, folds as k/n, blanks where nothing applies."""
    rows = []
    for row in table.to_dict("records"):
        shown = {key: row[key] for key in ("task", "model", "kind", "status")}
        shown["folds"] = f"{row['folds_done']}/{row['folds_expected']}"
        shown["n_test"] = "" if pd.isna(row["n_test"]) else str(row["n_test"])
        for column, title in METRIC_TITLES.items():
            shown[title] = _mean_std(row[column], row[f"{column}_std"], row["folds_done"])
        shown["baseline"] = _baseline_text(row)
        shown["study reported"] = row["study"]
        rows.append(shown)
    return pd.DataFrame(rows)


def _mean_std(mean: Any, std: Any, folds: int) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.3f}" if folds <= 1 or pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


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


# ---------------------------------------------------------------------------------------------
# The report files


def write_report(workdir: str | Path) -> Path:
    """Write WORKDIR/report/{summary.csv, summary.md, index.html}; return index.html's path."""
    workdir = Path(workdir)
    runs = load_runs(workdir)
    table = _table(runs)
    shown = display_table(table)
    out = workdir / REPORT_DIR
    write_csv_atomic(table, out / "summary.csv")
    write_text_atomic(_summary_markdown(runs, shown), out / "summary.md")
    page = out / "index.html"
    write_text_atomic(_html_page(workdir, runs, shown), page)
    return page


REAL_DATA_HEADLINE = "Every trained run used prepared (real, TOP-layout) data."


def _data_headline(runs: list[Run]) -> str:
    """One line on the data behind the trained runs; SYNTHETIC or unknown data is said first."""
    flags = {run.title: ((run.folds[0].config or {}).get("data") or {}).get("synthetic")
             for run in runs if run.folds}
    if not flags:
        return "No run of the matrix has been trained in this workdir yet."
    synthetic = [title for title, flag in flags.items() if flag is True]
    unknown = [title for title, flag in flags.items() if flag is None]
    if len(synthetic) == len(flags):
        return ("SYNTHETIC DATA: every trained run used the synthetic default dataset "
                "(procedural fundus images, not real patients). These numbers check the code, "
                "not the study's claims; prepare real data with `invoke data` and train with "
                "`--data-dir` for real results.")
    if synthetic or unknown:
        parts = ([f"SYNTHETIC default data in {', '.join(synthetic)}"] if synthetic else []) + (
            [f"no config.json, data unknown, in {', '.join(unknown)}"] if unknown else [])
        return f"NOT ALL REAL DATA: {'; '.join(parts)}."
    return REAL_DATA_HEADLINE


def _summary_markdown(runs: list[Run], shown: pd.DataFrame) -> str:
    notes = [note for run in runs for note in run.notes]
    return ("# jaxfundus results\n\n" + f"**{_data_headline(runs)}**\n\n" + markdown_table(shown)
            + "\n" + HOW_TO_READ["summary"] + "\n"
            + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else ""))


HOW_TO_READ = {
    "summary": (
        "Each row is one task x model. Metrics are on the test split, mean ± std over the "
        "cross-validation folds (each fold tests different patients); holdout tasks have one "
        "fold. AUROC is macro one-vs-rest for multi-class and multi-label tasks and the anomaly "
        "score's AUROC for anomaly tasks; 0.5 is chance. Read accuracy against the baseline: "
        "the trivial predictor's accuracy on the same test split. On an anomaly test set that "
        "is mostly anomalous, calling everything anomalous already scores high accuracy and F1 "
        "(the study's GANomaly: accuracy 0.909, F1 0.952, yet AUROC 0.455). 'study reported' "
        "quotes the study, which split by image, not by patient as here, so its numbers are "
        "not directly comparable."),
    "curves": (
        "Per epoch: training (solid) and validation (dashed) scores and losses, all folds "
        "overlaid in the same colours. A growing gap between training and validation accuracy "
        "is the overfitting the study saw. Training scores are averaged over the epoch's "
        "augmented batches. Anomaly runs have no accuracy while training; their validation "
        "AUROC is shown, with generator and discriminator losses."),
    "cv": (
        "Test metrics of each fold, then all folds together (bar = mean, error bar = std, "
        "dots = folds). Each fold tests a different group of patients, so the spread between "
        "folds shows how much one split's number can be trusted (the study's five-rare folds "
        "ranged from ~20% to > 80%). The black tick is that fold's trivial baseline accuracy."),
    "per_disease": (
        "The study's Fig 12 redone: one group per normal-vs-disease task (bar = mean over "
        "folds, error bar = std, dots = folds). Normals are sampled to match each disease's "
        "count, so the majority baseline (black tick) sits near 0.5. Diseases with few images "
        "(AO) have tiny test splits: expect wide spread."),
    "roc": (
        "True-positive against false-positive rate over every threshold, from predictions.csv; "
        "the diagonal is chance. Cross-validated runs show each fold and the pooled test "
        "predictions of all folds (each image is tested once). Multi-class tasks are shown "
        "one-vs-rest per class. An AUROC below 0.5 means the score ranks normal images above "
        "diseased ones (the study's GANomaly: 0.455)."),
    "confusion": (
        "Rows are the true classes, columns the predictions; counts are summed over folds and "
        "the colour is the fraction of the row (that class's recall). A model that predicts "
        "one class for everything fills a single column. Anomaly runs use the threshold chosen "
        "on validation data (or the manual one). Multi-label tasks have no single confusion "
        "matrix; see their per-class ROC curves."),
    "reconstructions": (
        "Input, reconstruction and |input - reconstruction| per class, from the anomaly runs' "
        "test images. A useful detector reconstructs normal anatomy well and lesions badly, so "
        "lesions light up in the map; blurry reconstructions (the study's VAE, Fig 6) blur "
        "everything alike."),
    "eda": (
        "The study's Figs 1-3 for the data given to `invoke eda` (the synthetic default unless "
        "a source was named), which need not be the data the runs above trained on."),
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: .5em; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; font-size: .82em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.not-trained td { color: #888; } tr.partial td { background: #fff8e0; }
.banner { padding: .8em 1em; border-radius: 4px; font-weight: 600; margin: 1em 0; }
.synthetic { background: #fff3cd; border: 2px solid #e0a800; }
.real { background: #e8f4ea; border: 1px solid #6a6; }
.howto { background: #eef3fb; border-left: 4px solid #5b8ad6; padding: .5em .8em;
         font-size: .9em; }
.empty { color: #777; font-style: italic; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
/* A table sized by its image, so the caption wraps to the image's width. */
figure { margin: 0; display: table; }
figure img { display: block; }
figcaption { font-size: .8em; color: #444; display: table-caption; caption-side: bottom;
             padding: 2px 4px; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; }
nav ol { columns: 2; }
"""


def _html_page(workdir: Path, runs: list[Run], shown: pd.DataFrame) -> str:
    trained = [run for run in runs if run.folds]
    sections = [
        ("data", "Data and settings", _provenance_section(runs)),
        ("summary", "Summary table", _summary_section(runs, shown)),
        ("curves", "Training curves (study Figs 7, 8, 11)", _curves_section(trained)),
        ("cv", "Cross-validation folds (study Figs 9, 10, 13)", _cv_section(trained)),
        ("per-disease", "Normal vs each disease (study Fig 12)", _per_disease_section(runs)),
        ("roc", "ROC curves (study Fig 5)", _roc_section(trained)),
        ("confusion", "Confusion matrices", _confusion_section(trained)),
        ("reconstructions", "Anomaly-detector reconstructions (study Fig 6)",
         _reconstructions_section(runs)),
        ("eda", "Exploratory data analysis (study Figs 1-3)", _eda_section(workdir / "eda")),
    ]
    toc = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>'
                  for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    written = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>jaxfundus report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>jaxfundus: disease and anomaly detection in fundus photographs</h1>"
        f"<p>Results in <code>{html.escape(str(workdir))}</code>, written {written}.</p>"
        f"{_banner(runs)}<nav><h2>Contents</h2><ol>{toc}</ol></nav>{body}</body></html>\n")


def _banner(runs: list[Run]) -> str:
    headline = _data_headline(runs)
    css = "real" if headline == REAL_DATA_HEADLINE else "synthetic"
    return f'<div class="banner {css}">{html.escape(headline)}</div>'


def _how_to_read(key: str) -> str:
    return f'<p class="howto"><b>How to read this.</b> {html.escape(HOW_TO_READ[key])}</p>'


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _gallery(figures: list[str], notes: list[str], nothing: str) -> str:
    """Figures side by side, then notes on runs without a figure; `nothing` when both are empty."""
    if not figures and not notes:
        return _empty(nothing)
    grid = f'<div class="figures">{"".join(figures)}</div>' if figures else ""
    return grid + "".join(_empty(note) for note in notes)


def _html_table(frame: pd.DataFrame, row_class: Callable[[dict], str] = lambda row: "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        f'<tr class="{row_class(row)}">'
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in frame.to_dict("records"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _study_figure(figures: dict[str, str], task: str) -> str:
    return f" (study {figures[task]})" if task in figures else ""


# ---------------------------------------------------------------------------------------------
# Sections


def _provenance_section(runs: list[Run]) -> str:
    trained = [run for run in runs if run.folds]
    if not trained:
        return _empty("No run has been trained yet: train with `invoke train --all` (or one "
                      "task) and write this report again.")
    rows, versions = [], {}
    for run in trained:
        config = run.folds[0].config or {}
        data = config.get("data") or {}
        rows.append({
            "run": run.title, "preset": config.get("preset", "?"),
            "image size": config.get("image_size", "?"), "epochs": config.get("epochs", "?"),
            "seed": config.get("seed", "?"),
            "data": {True: "SYNTHETIC", False: "real"}.get(data.get("synthetic"), "?"),
            "fingerprint": data.get("fingerprint", "?"),
            "images / patients": f"{data.get('n_images', '?')} / {data.get('n_patients', '?')}",
            "split": " / ".join(f"{k} {v}" for k, v in
                                         (config.get("split_counts") or {}).items()),
            "git commit": config.get("git_commit") or "?"})
        key = json.dumps(config.get("versions") or {}, sort_keys=True)
        versions.setdefault(key, []).append(run.title)
    sources = sorted({(r["data"], r["fingerprint"]) for r in rows})
    version_lines = "".join(
        f"<li>{html.escape(', '.join(f'{k} {v}' for k, v in json.loads(key).items()) or '?')}"
        + (f" &mdash; {html.escape(', '.join(titles))}" if len(versions) > 1 else "") + "</li>"
        for key, titles in versions.items())
    return (
        "<p>Data sources: " + html.escape("; ".join(f"{kind} data, fingerprint {fingerprint}"
                                                    for kind, fingerprint in sources)) + "</p>"
        + _html_table(pd.DataFrame(rows))
        + f"<p>Package versions:</p><ul>{version_lines}</ul>")


def _summary_section(runs: list[Run], shown: pd.DataFrame) -> str:
    notes = [note for run in runs for note in run.notes]
    note_list = ("<p>Notes:</p><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                 + "</ul>") if notes else ""
    return (_how_to_read("summary") + _html_table(shown, _status_class)
            + "<p>Also in <code>summary.csv</code> (numbers, with std columns) and "
            "<code>summary.md</code> next to this page.</p>" + note_list)


def _status_class(row: dict) -> str:
    status = row["status"]
    return "" if status == "trained" else "not-trained" if status == "not trained" else "partial"


def _curves_section(trained: list[Run]) -> str:
    figures = []
    for run in trained:
        histories = {f.number: h for f in run.folds
                     if (h := f.history()) is not None and len(h)}
        png = plots.training_curves(histories, run.title) if histories else None
        if png is not None:
            figures.append(_figure(png, f"{run.title}: training and validation per epoch"
                                   + _study_figure(CURVE_FIGURES, run.spec.name)))
    return _how_to_read("curves") + _gallery(figures, [], "No trained run has a history.csv.")


def _fold_series(run: Run, folds: list[Fold]) -> dict[str, list[list[float]]]:
    """Metric title -> per fold, [value] (or [] where the metric is undefined)."""
    return {METRIC_TITLES[column]: [[f.metrics[source]] if _is_number(f.metrics.get(source))
                                    else [] for f in folds]
            for column, source in TABLE_METRICS[run.spec.kind].items()}


def _cv_section(trained: list[Run]) -> str:
    figures = []
    for run in (r for r in trained if r.spec.cv_folds):
        series = _fold_series(run, run.folds)
        for per_fold in series.values():
            per_fold.append([v for values in per_fold for v in values])  # the "all folds" bar
        baselines = [fold_baseline(run, f) for f in run.folds]
        png = plots.grouped_bars(
            [f"fold {f.number}" for f in run.folds] + ["all folds"], series,
            f"{run.title}: test metrics per fold", baseline=[*baselines, _mean(baselines)],
            baseline_label=f"baseline ({BASELINE_NAMES[run.spec.kind]})")
        figures.append(_figure(png, f"{run.title}: {run.status}, {len(run.folds)} of "
                               f"{run.folds_expected} folds"
                               + _study_figure(CV_FIGURES, run.spec.name)))
    return _how_to_read("cv") + _gallery(figures, [], "No cross-validated task has been trained.")


def _is_normal_vs_disease(spec: TaskSpec) -> bool:
    return (spec.kind == "single-label" and len(spec.classes) == 2
            and spec.classes[0] == NORMAL and spec.classes[1] in DISEASES)


def _per_disease_section(runs: list[Run]) -> str:
    disease_runs = [run for run in runs if _is_normal_vs_disease(run.spec)]
    figures = []
    for model in dict.fromkeys(run.model for run in disease_runs):
        by_disease = {run.spec.classes[1]: run for run in disease_runs if run.model == model}
        if not any(run.folds for run in by_disease.values()):
            continue
        series: dict[str, list[list[float]]] = {
            METRIC_TITLES[column]: [] for column in TABLE_METRICS["single-label"]}
        for run in by_disease.values():
            for title, per_fold in _fold_series(run, run.folds).items():
                series[title].append([v for values in per_fold for v in values])
        baselines = [_mean(fold_baseline(run, f) for f in run.folds)
                     for run in by_disease.values()]
        png = plots.grouped_bars(list(by_disease), series,
                                 f"normal vs each disease, {model}: test metrics over folds",
                                 baseline=baselines, baseline_label="baseline (majority class)")
        trained = sum(bool(run.folds) for run in by_disease.values())
        figures.append(_figure(png, f"{model}: {trained} of {len(by_disease)} normal-vs-disease "
                               "tasks trained"))
    return _how_to_read("per_disease") + _gallery(
        figures, [], "None of the normal-vs-disease tasks has been trained "
               "(invoke train --task=rare-vs-normal).")


def _roc_section(trained: list[Run]) -> str:
    figures, notes = [], []
    for run in trained:
        curves, how = _roc_inputs(run)
        png = plots.roc_curves(curves, run.title)
        if png is None:
            notes.append(f"{run.title}: no ROC curve (predictions.csv missing or its test "
                         "labels hold one class only).")
        else:
            figures.append(_figure(png, f"{run.title}: ROC on the test split{how}"
                                   + _study_figure(ROC_FIGURES, run.spec.name)))
    return _how_to_read("roc") + _gallery(figures, notes, "No run has been trained.")


def _roc_inputs(run: Run) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    """(curves as (label, y_bin, score), a note on what they are) from predictions.csv.

    One positive class (binary, anomaly): a curve per fold plus all folds pooled; several
    classes: one-vs-rest per class on the pooled predictions.
    """
    predictions = {f.number: p for f in run.folds if (p := f.predictions()) is not None}
    classes, kind = run.spec.classes, run.spec.kind
    # (name, truth column, its positive value, score column) per curve family
    if kind == "anomaly":
        targets = [("anomalous", "label", 1, "score")]
    elif kind == "multi-label":
        targets = [(c, f"label_{c}", 1, f"prob_{c}") for c in classes]
    else:
        targets = [(c, "label", c, f"prob_{c}") for c in classes[len(classes) == 2:]]
    if len(targets) == 1:
        frames = {f"fold {k}": p for k, p in predictions.items()}
        if len(predictions) > 1:
            frames["all folds pooled"] = pd.concat(predictions.values())
        curves = [_roc_input(label, frame, *targets[0][1:]) for label, frame in frames.items()]
        how = f", {targets[0][0]} = positive"
    else:
        pooled = pd.concat(predictions.values()) if predictions else pd.DataFrame()
        curves = [_roc_input(name, pooled, *target) for name, *target in targets]
        how = ", one-vs-rest per class" + (", folds pooled" if len(predictions) > 1 else "")
    return [curve for curve in curves if curve is not None], how


def _roc_input(label: str, frame: pd.DataFrame, truth: str, positive: Any,
               score: str) -> tuple[str, np.ndarray, np.ndarray] | None:
    if not {truth, score} <= set(frame):
        return None
    frame = frame.dropna(subset=[truth, score])
    return label, (frame[truth] == positive).to_numpy(), frame[score].to_numpy(dtype=np.float64)


def _confusion_section(trained: list[Run]) -> str:
    figures, notes = [], []
    for run in trained:
        if run.spec.kind == "multi-label":
            notes.append(f"{run.title}: multi-label, no single confusion matrix (see its "
                         "per-class ROC curves).")
            continue
        matrix, classes, how = _confusion_inputs(run)
        if matrix is None:
            notes.append(f"{run.title}: no confusion matrix (no confusion_matrix in metrics.json "
                         "or no label/pred in predictions.csv).")
            continue
        figures.append(_figure(plots.confusion_matrix(matrix, classes, run.title),
                               f"{run.title}: test counts{how}"))
    return _how_to_read("confusion") + _gallery(figures, notes, "No run has been trained.")


def _confusion_inputs(run: Run) -> tuple[np.ndarray | None, tuple[str, ...], str]:
    """(matrix summed over folds, class names, a caption note)."""
    pooled = f" summed over {len(run.folds)} folds" if len(run.folds) > 1 else ""
    n_classes = len(run.spec.classes)
    if run.spec.kind == "single-label":
        matrices = [np.asarray(f.metrics["confusion_matrix"]) for f in run.folds
                    if np.shape(f.metrics.get("confusion_matrix")) == (n_classes, n_classes)]
        return (sum(matrices) if matrices else None), run.spec.classes, pooled
    frames = [p for f in run.folds if (p := f.predictions()) is not None
              and {"label", "pred"} <= set(p)]
    if not frames:
        return None, (), ""
    both = pd.concat(frames)
    matrix = confusion_matrix(both["label"].to_numpy(dtype=np.int64),
                              both["pred"].to_numpy(dtype=np.int64), 2)
    thresholds = ", ".join(f"{_number_text(f.metrics.get('threshold'))} "
                           f"({f.metrics.get('threshold_source', '?')})" for f in run.folds)
    return matrix, ("normal", "anomalous"), f"{pooled}, threshold {thresholds}"


def _number_text(value: Any) -> str:
    return f"{value:.3g}" if _is_number(value) else "?"


def _reconstructions_section(runs: list[Run]) -> str:
    figures, notes = [], []
    for run in runs:
        for path in sorted(run.directory.glob("fold-*/*recon*.png")):
            caption = (f"{run.title}, {path.parent.name}: {path.name}"
                       + _study_figure(RECONSTRUCTION_FIGURES, run.spec.name))
            png = _embeddable_png(path)
            if png is None:
                notes.append(f"{caption}: not a readable image")
            else:
                figures.append(_figure(png, caption))
    return _how_to_read("reconstructions") + _gallery(
        figures, notes, "No reconstruction images (*recon*.png) in the run folders: train the "
               "ganomaly or vae task.")


def _eda_section(eda_dir: Path) -> str:
    figures, notes = [], []
    for path in sorted(eda_dir.glob("*.png")):
        png = _embeddable_png(path)
        if png is None:
            notes.append(f"{path.name}: not a readable image")
        else:
            figures.append(_figure(png, EDA_FIGURES.get(path.name, path.name)))
    summary = eda_dir / "summary.md"
    text = (f"<h3>summary.md</h3><pre>{html.escape(summary.read_text())}</pre>"
            if summary.exists() else "")
    return _how_to_read("eda") + _gallery(
        figures, notes, f"No EDA figures in {eda_dir}: run `invoke eda --workdir=...`.") + text


def _embeddable_png(path: Path) -> bytes | None:
    """The image as PNG bytes, downscaled to EMBEDDED_IMAGE_MAX_WIDTH; None if unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.width > EMBEDDED_IMAGE_MAX_WIDTH:
                height = round(image.height * EMBEDDED_IMAGE_MAX_WIDTH / image.width)
                image = image.resize((EMBEDDED_IMAGE_MAX_WIDTH, height), Image.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, UnidentifiedImageError):
        return None
