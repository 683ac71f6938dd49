"""The report's figures as PNG bytes.

Each figure is drawn on its own Agg canvas; pyplot (and its global backend) is never touched, so
the report can be written from any process, with or without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from io import BytesIO

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from jaxfundus.metrics import roc_auc

DPI = 90
# History columns drawn in the score panel: accuracies and AUROCs, all on [0, 1].
SCORE_WORDS = ("accuracy", "auroc")
SCORE_PANEL = "accuracy / AUROC"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def history_columns(history: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(score columns, loss columns) of a history.csv: train_/val_ accuracies and AUROCs, and
    train_/val_ columns ending in 'loss'."""
    logged = [c for c in history.columns if c.startswith(("train_", "val_"))]
    scores = [c for c in logged if any(word in c for word in SCORE_WORDS)]
    losses = [c for c in logged if c.endswith("loss")]
    return scores, losses


def training_curves(histories: Mapping[int, pd.DataFrame], title: str) -> bytes | None:
    """Scores and losses per epoch (train solid, validation dashed), every fold overlaid.

    None when no history has a column to draw.
    """
    score_columns: set[str] = set()
    loss_columns: set[str] = set()
    for history in histories.values():
        scores, losses = history_columns(history)
        score_columns.update(scores)
        loss_columns.update(losses)
    shown = [(panel, sorted(cols)) for panel, cols in
             ((SCORE_PANEL, score_columns), ("loss", loss_columns)) if cols]
    if not shown:
        return None
    figure = _figure(3.1 * len(shown), 2.7)
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    for ax, (panel, names) in zip(axes, shown, strict=True):
        metric_color = _colors_by_metric(names)
        labelled: set[str] = set()  # one legend entry per column, not per fold
        for history in histories.values():
            epochs = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
            for name in (n for n in names if n in history):
                ax.plot(epochs, history[name], color=metric_color[name], alpha=0.85,
                        linestyle="-" if name.startswith("train_") else "--", marker=".",
                        label=None if name in labelled else name)
                labelled.add(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(panel)
        if panel == SCORE_PANEL:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    folds = f" ({len(histories)} folds overlaid)" if len(histories) > 1 else ""
    figure.suptitle(title + folds, fontsize=10)
    return _png(figure)


def _colors_by_metric(columns: Sequence[str]) -> dict[str, str]:
    """Same colour for train_X and val_X, so a pair reads as one metric."""
    metrics = sorted({c.split("_", 1)[1] for c in columns})
    return {c: COLORS[metrics.index(c.split("_", 1)[1]) % len(COLORS)] for c in columns}


def grouped_bars(groups: Sequence[str], series: Mapping[str, Sequence[Sequence[float]]],
                 title: str, *, baseline: Sequence[float | None] = (),
                 baseline_label: str = "baseline") -> bytes:
    """One bar group per entry of `groups`, one bar per series.

    series[name][g] holds the values behind bar g (one per fold): the bar is their mean, with a
    std error bar and a dot per value when there are several; an empty list draws nothing.
    baseline[g], when given, is drawn as a black tick across group g.
    """
    width = 0.8 / max(len(series), 1)
    figure = _figure(max(4.5, 0.35 * len(groups) * max(len(series), 1) + 2.0), 3.4)
    ax = figure.subplots()
    x = np.arange(len(groups))
    for s, (name, per_group) in enumerate(series.items()):
        offsets = x - 0.4 + width * (s + 0.5)
        label = name  # legend entry on the first bar of the series only
        for g, values in enumerate(per_group):
            if not values:
                continue
            mean = float(np.mean(values))
            spread = float(np.std(values)) if len(values) > 1 else None
            ax.bar(offsets[g], mean, width * 0.9, yerr=spread, capsize=2,
                   color=COLORS[s % len(COLORS)], label=label)
            label = None
            ax.text(offsets[g], mean + (spread or 0.0) + 0.01, f"{mean:.2f}", ha="center",
                    va="bottom", fontsize=6)
            if len(values) > 1:
                ax.plot(np.full(len(values), offsets[g]), values, "k.", markersize=3)
    label = baseline_label
    for g, value in enumerate(baseline):
        if value is not None:
            ax.hlines(value, x[g] - 0.42, x[g] + 0.42, colors="black", linewidth=1.5, label=label)
            label = None
    for g in range(len(groups)):
        if not any(per_group[g] for per_group in series.values()):
            ax.text(x[g], 0.5, "not trained", ha="center", va="center", rotation=90,
                    fontsize=8, color="grey")
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes, so it never hides a bar.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    ax.set_title(title, fontsize=10)
    return _png(figure)


def roc_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str) -> bytes | None:
    """ROC per (label, y_bin, score) with its AUROC in the legend; curves whose labels hold a
    single class are left out (None when nothing is left)."""
    drawable = [(label, np.asarray(y, dtype=np.int64), np.asarray(s, dtype=np.float64))
                for label, y, s in curves if 0 < np.sum(y) < len(y)]
    if not drawable:
        return None
    figure = _figure(3.5, 3.7)
    ax = figure.subplots()
    for i, (label, y, score) in enumerate(drawable):
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, color=COLORS[i % len(COLORS)], linewidth=1.4,
                label=f"{label} (AUROC {roc_auc(y, score):.3f}, n={len(y)})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_aspect("equal")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(title, fontsize=9)
    return _png(figure)


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """Counts annotated, coloured by the fraction of each true-class row (the recall)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    rows = matrix.sum(axis=1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = 1.6 + 0.55 * len(classes)
    figure = _figure(size + 0.8, size)
    ax = figure.subplots()
    image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    for (r, c), count in np.ndenumerate(matrix):
        ax.text(c, r, f"{count}\n{fraction[r, c]:.0%}", ha="center", va="center", fontsize=7,
                color="white" if fraction[r, c] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    figure.colorbar(image, ax=ax, fraction=0.046, label="fraction of row")
    ax.set_title(title, fontsize=9)
    return _png(figure)


def reliability_diagram(diagrams: Mapping[str, Mapping[str, Sequence]], title: str) -> bytes:
    """Accuracy against mean confidence per confidence bin, one series per entry (e.g. the
    model's probabilities and, with temperature scaling, those before it), each point's area
    growing with its bin's count; the diagonal is perfect calibration.

    diagrams: label -> {"confidence": [...], "accuracy": [...], "count": [...]} per bin, None or
    NaN for an empty bin (metrics.json's `reliability`).
    """
    figure = _figure(3.5, 3.7)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1,
            label="perfectly calibrated")
    for i, (label, diagram) in enumerate(diagrams.items()):
        confidence = np.array(diagram["confidence"], dtype=np.float64)
        accuracy = np.array(diagram["accuracy"], dtype=np.float64)
        count = np.asarray(diagram["count"], dtype=np.float64)
        filled = count > 0
        sizes = 8 + 120 * count[filled] / max(count.sum(), 1)
        ax.plot(confidence[filled], accuracy[filled], color=COLORS[i % len(COLORS)],
                linewidth=1.2, label=label)
        ax.scatter(confidence[filled], accuracy[filled], s=sizes, color=COLORS[i % len(COLORS)],
                   alpha=0.7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean confidence (top class)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")
    ax.set_title(title, fontsize=9)
    return _png(figure)
