"""What a report is made from: every task x model of the matrix, read through jaxfundus.runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from jaxfundus.config import load_task, task_names
from jaxfundus.evaluate.results import headline_intervals
from jaxfundus.report import tables
from jaxfundus.runs import Run, load_run, trained_models

REAL_DATA_HEADLINE = "Every trained run used prepared (real, TOP-layout) data."


def load_runs(workdir: str | Path) -> list[Run]:
    """Every task x model of the matrix, plus extra models found trained in the workdir (a
    summary.json without pooled intervals gets them here)."""
    runs = []
    for task in task_names():
        spec = load_task(task)
        runs.extend(load_run(workdir, spec, model, headline_intervals)
                    for model in (*spec.models, *trained_models(workdir, spec)))
    return runs


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything the sections read: the runs and the summary table built from them."""

    workdir: Path
    runs: list[Run]
    table: pd.DataFrame  # tables.CSV_COLUMNS, numbers (summary.csv)
    shown: pd.DataFrame  # the same rows as text for people (summary.md, the page)

    @property
    def trained(self) -> list[Run]:
        """Runs with at least one finished fold."""
        return [run for run in self.runs if run.folds]

    @property
    def notes(self) -> list[str]:
        return [note for run in self.runs for note in run.notes]


def load_report(workdir: str | Path) -> ReportData:
    workdir = Path(workdir)
    runs = load_runs(workdir)
    table = tables.summary_table(runs)
    return ReportData(workdir, runs, table, tables.display_table(table))


def data_headline(runs: list[Run]) -> str:
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
