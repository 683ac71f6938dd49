"""What an anomaly detector's AUROC rests on: the image score pooled from its map, how well the
map finds the lesions, and on the held-out-lesion test, the AUROC per disease."""

from __future__ import annotations

import pandas as pd

from jaxfundus.report import page
from jaxfundus.report.load import ReportData
from jaxfundus.runs import is_number


def image_score_text(metrics: dict) -> str:
    """How metrics.json says the image score was pooled, e.g. "top 5% of the map, sigma 1 px"."""
    method = metrics.get("image_score")
    sigma = f", sigma {_short(metrics.get('image_score_sigma'))} px"
    if method == "top-k":
        return f"top {_short(metrics.get('image_score_k'))}% of the map{sigma}"
    if method == "max":
        return f"max of the map{sigma}"
    return {"mean": "mean of the map", "latent": "latent distance",
            None: "not recorded"}.get(method, str(method))


def detectors(report: ReportData) -> str:
    rows = []
    for run in report.trained:
        if run.spec.kind != "anomaly":
            continue
        for fold in run.folds:
            metrics, config = fold.metrics, fold.config or {}
            rows.append({
                "run": run.title, "fold": fold.number,
                "test set": config.get("anomaly_test_set", "?"),
                "image score": image_score_text(metrics),
                "image AUROC": _number(metrics.get("auroc")),
                "pixel AUROC (images)": _pixel(metrics),
                "trained with lesions of": _names(metrics.get("synthetic_lesions")),
                "held-out diseases (tested)": _names(metrics.get("heldout_diseases")),
                "validation diseases": _names(metrics.get("validation_diseases")),
                "AUROC per disease": ", ".join(
                    f"{name} {_number(value)}"
                    for name, value in (metrics.get("auroc_per_disease") or {}).items())
                or "-"})
    if not rows:
        return page.how_to_read("anomaly") + page.empty(
            "No anomaly detector (ganomaly, vae, draem) has been trained.")
    return page.how_to_read("anomaly") + page.html_table(pd.DataFrame(rows))


def _names(names: list[str] | None) -> str:
    return ", ".join(names) if names else "-"


def _short(value) -> str:
    return f"{value:g}" if is_number(value) else "?"


def _number(value) -> str:
    return f"{value:.3f}" if is_number(value) else "undefined"


def _pixel(metrics: dict) -> str:
    if not is_number(metrics.get("pixel_auroc")):
        return "no lesion masks"
    return f"{metrics['pixel_auroc']:.3f} ({metrics.get('n_localisation_images', '?')})"
