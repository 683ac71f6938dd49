"""Write WORKDIR/report/{summary.csv, summary.md, index.html}."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jaxfundus.io import write_csv_atomic, write_text_atomic
from jaxfundus.report import page
from jaxfundus.report.load import REAL_DATA_HEADLINE, ReportData, data_headline, load_report
from jaxfundus.report.sections import SECTIONS
from jaxfundus.report.tables import markdown_table

REPORT_DIR = "report"


def summary_table(workdir: str | Path) -> pd.DataFrame:
    """The numbers of summary.csv: one row per task x model (tables.CSV_COLUMNS)."""
    return load_report(workdir).table


def write_report(workdir: str | Path) -> Path:
    """Write WORKDIR/report/{summary.csv, summary.md, index.html}; return index.html's path."""
    report = load_report(workdir)
    out = report.workdir / REPORT_DIR
    write_csv_atomic(report.table, out / "summary.csv")
    write_text_atomic(summary_markdown(report), out / "summary.md")
    path = out / "index.html"
    write_text_atomic(html_page(report), path)
    return path


def summary_markdown(report: ReportData) -> str:
    notes = report.notes
    return ("# jaxfundus results\n\n" + f"**{data_headline(report.runs)}**\n\n"
            + markdown_table(report.shown) + "\n" + page.how_to_read_notes()["summary"] + "\n"
            + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else ""))


def html_page(report: ReportData) -> str:
    headline = data_headline(report.runs)
    return page.render_page(
        report.workdir, headline, "real" if headline == REAL_DATA_HEADLINE else "synthetic",
        [(section.id, section.title, section.render(report)) for section in SECTIONS])
