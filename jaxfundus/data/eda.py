"""Exploratory data analysis of a TOP-layout directory: figures and a markdown summary.

Reproduces the study's Fig 1 (age and sex), Fig 2 (images per class) and Fig 3 (sample images),
and adds the disease co-occurrence matrix the study did not show. Input layout:
`source_dir/data.csv` with columns CSV_COLUMNS and images at `source_dir/img/<filename>`.
All counts are per image (row) unless named per patient.
"""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from jaxfundus.data.labels import CSV_COLUMNS, DISEASES, NORMAL

FIGURES = {
    "age_sex.png": "age histogram by sex and sex counts (study Fig 1)",
    "disease_counts.png": "images per class and single-label images per class (study Fig 2)",
    "cooccurrence.png": "disease co-occurrence counts (not in the study)",
    "samples.png": "sample images per class (study Fig 3)",
}
CLASSES: tuple[str, ...] = (NORMAL, *DISEASES)
TOP_PAIRS = 10
THUMBNAIL_PX = 256


def read_top_csv(source_dir: str | Path) -> pd.DataFrame:
    """data.csv as a DataFrame; raises ValueError if any CSV_COLUMNS column is missing."""
    df = pd.read_csv(Path(source_dir) / "data.csv")
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"data.csv lacks columns {missing}")
    return df


def _disease_flags(df: pd.DataFrame) -> np.ndarray:
    """bool[N, len(DISEASES)] in DISEASES order."""
    return df[list(DISEASES)].to_numpy().astype(bool)


def _class_flags(df: pd.DataFrame) -> np.ndarray:
    """bool[N, len(CLASSES)]: normal (no disease) followed by the disease flags."""
    flags = _disease_flags(df)
    return np.column_stack([~flags.any(axis=1), flags])


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}


def eda_summary(df: pd.DataFrame) -> dict:
    """The numbers reported in summary.md, as JSON-ready python types.

    Ages and eye/sex counts are per image; `sex_counts_patients` uses each patient's first row.
    """
    flags = _disease_flags(df)
    class_flags = _class_flags(df)
    single = class_flags.sum(axis=1) == 1  # normal rows count as single-label "normal"
    cooccurrence = flags.T.astype(np.int64) @ flags.astype(np.int64)
    pairs = [
        (DISEASES[i], DISEASES[j], int(cooccurrence[i, j]))
        for i, j in itertools.combinations(range(len(DISEASES)), 2)
        if cooccurrence[i, j] > 0
    ]
    pairs.sort(key=lambda pair: -pair[2])  # stable: equal counts keep DISEASES order
    per_patient = df.groupby("ID").size()
    age = df["age"].dropna()
    return {
        "n_images": int(len(df)),
        "n_patients": int(df["ID"].nunique()),
        "images_per_patient": {
            "mean": float(per_patient.mean()),
            "median": float(per_patient.median()),
            "max": int(per_patient.max()),
        },
        "age": {
            "mean": float(age.mean()),
            "median": float(age.median()),
            "min": float(age.min()),
            "max": float(age.max()),
            "n_missing": int(df["age"].isna().sum()),
        },
        "sex_counts_images": _counts(df["sex"]),
        "sex_counts_patients": _counts(df.groupby("ID")["sex"].first()),
        "eye_counts": _counts(df["LR"]),
        "class_counts": dict(zip(CLASSES, map(int, class_flags.sum(axis=0)), strict=True)),
        "single_label_counts": dict(
            zip(CLASSES, map(int, class_flags[single].sum(axis=0)), strict=True)
        ),
        "n_multi_label": int((flags.sum(axis=1) >= 2).sum()),
        "cooccurrence": cooccurrence.tolist(),
        "top_pairs": pairs[:TOP_PAIRS],
    }


def _new_figure(width: float, height: float, **subplot_kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    return fig, np.atleast_1d(fig.subplots(**subplot_kw))


def _plot_age_sex(df: pd.DataFrame, summary: dict, path: Path) -> None:
    fig, (ax_age, ax_sex) = _new_figure(11, 4, ncols=2, width_ratios=[3, 1])
    ages = df["age"].dropna()
    bins = np.histogram_bin_edges(ages, bins="auto") if len(ages) else 10
    sexes = list(summary["sex_counts_images"])
    groups = [df.loc[df["sex"].astype(str) == s, "age"].dropna() for s in sexes]
    ax_age.hist(groups, bins=bins, stacked=True, label=[f"sex = {s}" for s in sexes])
    ax_age.set(xlabel="age (years)", ylabel="images", title="Age distribution by sex")
    ax_age.legend()
    counts = list(summary["sex_counts_images"].values())
    bars = ax_sex.bar(sexes, counts, color=[f"C{i}" for i in range(len(sexes))])
    ax_sex.bar_label(bars)
    ax_sex.set(xlabel="sex", ylabel="images", title="Images by sex")
    fig.savefig(path, dpi=100)


def _plot_disease_counts(summary: dict, path: Path) -> None:
    fig, (ax,) = _new_figure(11, 4.5)
    x = np.arange(len(CLASSES))
    width = 0.4
    for offset, key, label in (
        (-width / 2, "class_counts", "images with the class"),
        (width / 2, "single_label_counts", "images with only this class"),
    ):
        bars = ax.bar(x + offset, list(summary[key].values()), width, label=label)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, CLASSES)
    ax.set(ylabel="images", title="Images per class")
    ax.legend()
    fig.savefig(path, dpi=100)


def _plot_cooccurrence(summary: dict, path: Path) -> None:
    matrix = np.asarray(summary["cooccurrence"])
    fig, (ax,) = _new_figure(7.5, 6.5)
    # Log colours: the diagonal (class sizes) would otherwise wash out the rare pairs.
    # Fixed limits: LogNorm cannot autoscale when no (or only one) pair count is positive.
    norm = LogNorm(vmin=1, vmax=max(int(matrix.max()), 2))
    image = ax.imshow(np.where(matrix > 0, matrix, np.nan), cmap="viridis", norm=norm)
    for i, j in np.ndindex(matrix.shape):
        ax.text(
            j,
            i,
            str(matrix[i, j]),
            ha="center",
            va="center",
            fontsize=8,
            color="black",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0},
        )
    ax.set_xticks(range(len(DISEASES)), DISEASES)
    ax.set_yticks(range(len(DISEASES)), DISEASES)
    ax.set_title("Disease co-occurrence (images; diagonal = images with the disease)")
    fig.colorbar(image, ax=ax, label="images (log scale)")
    fig.savefig(path, dpi=100)


def _load_thumbnail(path: Path) -> Image.Image | None:
    """RGB thumbnail, or None when the file is missing or unreadable."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at reduced size
            thumb = img.convert("RGB")
            thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            return thumb
    except (OSError, UnidentifiedImageError):
        return None


def _choose_samples(
    df: pd.DataFrame, img_dir: Path, per_class: int, rng: np.random.Generator
) -> dict[str, list[tuple[str, Image.Image]]]:
    """Up to `per_class` readable images per class, preferring single-label images."""
    class_flags = _class_flags(df)
    single = class_flags.sum(axis=1) == 1
    samples = {}
    for c, name in enumerate(CLASSES):
        with_class = class_flags[:, c]
        # Single-label images show the class unmixed; fall back to any image with it.
        rows = np.r_[
            rng.permutation(np.flatnonzero(with_class & single)),
            rng.permutation(np.flatnonzero(with_class & ~single)),
        ]
        chosen = []
        for row in rows:
            filename = str(df["filename"].iloc[row])
            thumb = _load_thumbnail(img_dir / filename)
            if thumb is not None:
                chosen.append((filename, thumb))
            if len(chosen) == per_class:
                break
        samples[name] = chosen
    return samples


def _plot_samples(
    samples: dict[str, list[tuple[str, Image.Image]]], per_class: int, path: Path
) -> None:
    fig, axes = _new_figure(
        2.2 * per_class, 2.2 * len(CLASSES), nrows=len(CLASSES), ncols=per_class, squeeze=False
    )
    for axes_row, (name, chosen) in zip(axes, samples.items(), strict=True):
        for k, ax in enumerate(axes_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(chosen):
                filename, thumb = chosen[k]
                ax.imshow(thumb)
                ax.set_xlabel(filename, fontsize=7)
            else:
                # Hide the frame but keep the axes, so the row's class label stays visible.
                ax.spines[:].set_visible(False)
                if k == 0:
                    ax.text(
                        0.5,
                        0.5,
                        "no readable image",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                        color="gray",
                    )
        axes_row[0].set_ylabel(name, fontsize=12)
    fig.suptitle("Sample images per class (single-label images first)")
    fig.savefig(path, dpi=100)


def _summary_markdown(summary: dict, source_dir: Path, samples: dict) -> str:
    age, ipp = summary["age"], summary["images_per_patient"]

    def table(header: tuple[str, ...], rows) -> list[str]:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]

    lines = [
        f"# EDA of `{source_dir}`",
        "",
        f"- images (rows): {summary['n_images']}",
        f"- patients: {summary['n_patients']}",
        f"- images per patient: mean {ipp['mean']:.2f}, median {ipp['median']:g}, max {ipp['max']}",
        f"- age (per image): mean {age['mean']:.1f}, median {age['median']:g}, "
        f"range {age['min']:g}-{age['max']:g}, missing {age['n_missing']}",
        "- sex (images): "
        + ", ".join(f"{k}: {v}" for k, v in summary["sex_counts_images"].items()),
        "- sex (patients): "
        + ", ".join(f"{k}: {v}" for k, v in summary["sex_counts_patients"].items()),
        "- eye (LR): " + ", ".join(f"{k}: {v}" for k, v in summary["eye_counts"].items()),
        f"- images with two or more diseases: {summary['n_multi_label']}",
        "",
        "## Images per class",
        "",
        *table(
            ("class", "images with the class", "images with only this class", "samples shown"),
            (
                (c, summary["class_counts"][c], summary["single_label_counts"][c], len(samples[c]))
                for c in CLASSES
            ),
        ),
        "",
        "## Most frequent co-occurring disease pairs",
        "",
        *(
            table(("pair", "images"), ((f"{a} + {b}", n) for a, b, n in summary["top_pairs"]))
            if summary["top_pairs"]
            else ["No image has two or more diseases."]
        ),
        "",
        "## Figures",
        "",
        *(f"- `{name}`: {what}" for name, what in FIGURES.items()),
        "",
    ]
    return "\n".join(lines)


def write_eda(
    source_dir: str | Path, out_dir: str | Path, samples_per_class: int = 4, seed: int = 0
) -> Path:
    """Write FIGURES and summary.md for a TOP-layout directory into out_dir; return summary.md.

    Deterministic for a given seed (sample images are drawn with it). Missing or unreadable
    image files are skipped when choosing samples.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = read_top_csv(source_dir)
    if df.empty:
        raise ValueError(f"{source_dir / 'data.csv'} has no rows")
    summary = eda_summary(df)
    _plot_age_sex(df, summary, out_dir / "age_sex.png")
    _plot_disease_counts(summary, out_dir / "disease_counts.png")
    _plot_cooccurrence(summary, out_dir / "cooccurrence.png")
    samples = _choose_samples(
        df, source_dir / "img", samples_per_class, np.random.default_rng(seed)
    )
    _plot_samples(samples, samples_per_class, out_dir / "samples.png")
    summary_path = out_dir / "summary.md"
    summary_path.write_text(_summary_markdown(summary, source_dir, samples))
    return summary_path
