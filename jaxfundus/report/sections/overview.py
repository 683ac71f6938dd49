"""Where the numbers come from (data, settings, versions) and the summary table."""

from __future__ import annotations

import html
import json

import pandas as pd

from jaxfundus.report import page
from jaxfundus.report.load import ReportData


def provenance(report: ReportData) -> str:
    if not report.trained:
        return page.empty("No run has been trained yet: train with `invoke train --all` (or one "
                          "task) and write this report again.")
    rows, versions = [], {}
    for run in report.trained:
        config = run.folds[0].config or {}
        data = config.get("data") or {}
        rows.append({
            "run": run.title, "preset": config.get("preset", "?"),
            "image size": config.get("image_size", "?"), "epochs": config.get("epochs", "?"),
            "seed": config.get("seed", "?"), "init": _start(config),
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
        + page.html_table(pd.DataFrame(rows))
        + f"<p>Package versions:</p><ul>{version_lines}</ul>")


def summary(report: ReportData) -> str:
    note_list = ("<p>Notes:</p><ul>" + "".join(f"<li>{html.escape(n)}</li>"
                                               for n in report.notes)
                 + "</ul>") if report.notes else ""
    return (page.how_to_read("summary") + page.html_table(report.shown, _status_class)
            + "<p>Also in <code>summary.csv</code> (numbers, with std columns) and "
            "<code>summary.md</code> next to this page.</p>" + note_list)


def _status_class(row: dict) -> str:
    status = row["status"]
    return "" if status == "trained" else "not-trained" if status == "not trained" else "partial"


def _start(config: dict) -> str:
    """How a run's model started: "scratch", or the init with its weights file and hash."""
    start = config.get("start") or {"init": config.get("init") or "scratch"}
    if not start.get("weights_file"):
        return str(start["init"])
    return f"{start['init']}: {start['weights_file']} (sha256 {start['weights_sha256'][:12]})"
