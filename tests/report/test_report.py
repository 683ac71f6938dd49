"""The report from a workdir of contract files: every matrix row, summary.json means, one
self-contained page whose embedded images are real pictures, and a page Chromium can render."""

from __future__ import annotations

import base64
import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import tomllib
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxfundus import runs
from jaxfundus.config import load_task, task_names
from jaxfundus.evaluate.calibration import (
    TemperatureScaling,
    expected_calibration_error,
    logits_from_probs,
    reliability_diagram,
)
from jaxfundus.evaluate.comparison import compare_predictions
from jaxfundus.evaluate.results import (
    anomaly_results,
    calibration_fields,
    headline_intervals,
    supervised_results,
    validation_operating_points,
)
from jaxfundus.methods.kinds import kind_of
from jaxfundus.report import summary_table, write_report
from jaxfundus.report.sections.anomaly import image_score_text
from jaxfundus.report.sections.clinical import pooled_reliability

REPO = Path(__file__).resolve().parents[2]
HISTORY_COLUMNS = {
    "single-label": ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                     "val_balanced_accuracy", "val_macro_auroc"),
    "multi-label": ("train_loss", "val_loss", "val_macro_auroc", "val_top1_accuracy",
                    "val_exact_match_accuracy"),
    "anomaly": ("train_loss", "train_disc_loss", "train_adversarial", "val_auroc",
                "val_normal_score"),
}
# (task, model) -> folds written; summary.json is left out for normal-vs-rvo (an interrupted run).
TRAINED = {("three-class", "resnet50"): 4, ("normal-vs-amd", "resnet50"): 4,
           ("normal-vs-rvo", "resnet50"): 1, ("ten-class", "resnet50"): 1,
           ("ganomaly", "ganomaly"): 1, ("binary", "resnet50"): 1, ("binary", "simple-cnn"): 1}
NO_SUMMARY_JSON = {("normal-vs-rvo", "resnet50")}
CALIBRATED = {("binary", "resnet50")}  # trained with `calibrate`: a validation temperature
WITH_SALIENCY = {("three-class", "resnet50"), ("binary", "resnet50")}  # saliency.png written


def _examples(n: int, fold: int) -> pd.DataFrame:
    return pd.DataFrame({"filename": [f"f{fold}_{i:03d}.jpg" for i in range(n)],
                         "patient_id": [f"{fold}{i // 2:03d}" for i in range(n)]})


def _softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _fold_results(rng, task: str, kind: str, classes: tuple[str, ...], fold: int,
                  calibrate: bool):
    """predictions.csv and metrics.json contents from the real results functions, as a fold's
    scoring makes them. Every model of a task sees the same test images and labels."""
    n = 60
    frame = _examples(n, fold)
    labels_rng = np.random.default_rng([zlib.crc32(task.encode()), fold])
    if kind == "anomaly":
        frame["label"] = (labels_rng.random(n) < 0.8).astype(np.int64)
        val_labels = np.r_[0, 1, (rng.random(30) < 0.5).astype(np.int64)]
        return anomaly_results(frame, rng.normal(size=n) + frame["label"].to_numpy(), val_labels,
                               rng.normal(size=val_labels.size) + val_labels, criterion="f1",
                               manual_threshold=None)
    if kind == "multi-label":
        labels = (labels_rng.random((n, len(classes))) < 0.3).astype(np.int64)
        labels[:len(classes), :] = np.eye(len(classes), dtype=np.int64)  # every class occurs
        for i, name in enumerate(classes):
            frame[f"label_{name}"] = labels[:, i]
        probs = 0.3 * labels + 0.7 * rng.random(labels.shape)
        predictions, metrics = supervised_results(frame, probs, classes, multi_label=True)
        metrics.update(calibration_fields(logits_from_probs(probs, multi_label=True), labels,
                                          probs, None))
        return predictions, metrics
    frame["label"] = labels = labels_rng.integers(0, len(classes), n)
    val_labels = rng.integers(0, len(classes), 40)
    logits, val_logits = (2.5 * rng.normal(size=(y.size, len(classes)))
                          + 2.5 * np.eye(len(classes))[y] for y in (labels, val_labels))
    scaling = TemperatureScaling.fit(val_logits, val_labels) if calibrate else None
    probs, val_probs = ((scaling.probs(z) if scaling else _softmax(z))
                        for z in (logits, val_logits))
    predictions, metrics = supervised_results(frame, probs, classes, multi_label=False)
    metrics.update(calibration_fields(logits, labels, probs, scaling))
    if len(classes) == 2:
        metrics["operating_points"] = validation_operating_points(val_labels, val_probs[:, 1],
                                                                  labels, probs[:, 1])
    return predictions, metrics


def _history(rng, kind: str) -> pd.DataFrame:
    epochs = np.arange(1, 6)
    history = pd.DataFrame({"epoch": epochs})
    for column in HISTORY_COLUMNS[kind]:
        trend = 1 - 0.5 / epochs if "loss" not in column else 1.5 / epochs
        history[column] = trend + 0.05 * rng.random(epochs.size)
    history["seconds"] = 1.0
    return history


def _config(task: str, model: str, fold: int) -> dict:
    return {"task": task, "model": model, "preset": "smoke", "image_size": 32, "epochs": 5,
            "seed": 0, "fold": fold, "split_counts": {"train": 120, "val": 40, "test": 60},
            "dropped_by_selection": {},
            "data": {"data_dir": "/cache/synthetic", "synthetic": True, "stored_image_size": 32,
                     "fingerprint": "f00dfeed", "n_images": 900, "n_patients": 450},
            "versions": {"jax": "0.10.2", "flax": "0.12.8"}, "git_commit": "0123abc+dirty"}


def _picture(width: int, height: int, seed: int) -> Image.Image:
    """A non-blank RGB picture: a gradient with noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(ramp + rng.normal(0, 30, ramp.shape), 0, 255).astype(np.uint8))


def write_runs(root: Path, trained: dict[tuple[str, str], int] = TRAINED) -> None:
    """Results of the `trained` runs (task, model) -> folds, plus EDA pictures, under root."""
    rng = np.random.default_rng(0)
    for (task, model), n_folds in trained.items():
        spec = load_task(task)
        for fold in range(n_folds):
            directory = runs.fold_directory(root, task, model, fold)
            predictions, metrics = _fold_results(rng, task, spec.kind, spec.classes, fold,
                                                 (task, model) in CALIBRATED)
            metrics.update(task=task, model=model, fold=fold, preset="smoke")
            if (task, model) in WITH_SALIENCY:
                directory.mkdir(parents=True)
                _picture(600, 420, fold).save(directory / runs.SALIENCY)
                metrics["saliency_pixel_auroc"] = {c: float(rng.uniform(0.5, 0.9))
                                                   for c in spec.classes[1:]}
                metrics["saliency_pixel_auroc"][spec.classes[0]] = None  # normal: no lesions
                metrics["n_saliency_images"] = {c: 7 for c in spec.classes}
            runs.write_history(directory, _history(rng, spec.kind).to_dict("records"))
            runs.write_fold_config(directory, _config(task, model, fold))
            runs.write_fold_results(directory, predictions, metrics)
        if (task, model) not in NO_SUMMARY_JSON:
            runs.write_summary(root, spec, model, headline_intervals)
    for task in {task for task, _ in trained} & {"ganomaly", "vae"}:
        _picture(270, 180, 1).save(runs.fold_directory(root, task, task, 0)
                                   / "reconstructions.png")
    (root / "eda").mkdir()
    _picture(300, 200, 2).save(root / "eda" / "age_sex.png")
    (root / "eda" / "summary.md").write_text("# EDA\n\n900 images of 450 patients\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_runs(root)
    assert write_report(root) == root / "report" / "index.html"
    return root


@pytest.fixture(scope="module")
def page(workdir) -> str:
    return (workdir / "report" / "index.html").read_text()


def _matrix() -> set[tuple[str, str]]:
    return {(task, model) for task in task_names() for model in load_task(task).models}


def test_summary_lists_every_task_and_model_with_its_status(workdir):
    table = pd.read_csv(workdir / "report" / "summary.csv")
    assert set(zip(table["task"], table["model"], strict=True)) == _matrix()
    assert len(table) == len(_matrix())
    status = dict(zip(zip(table["task"], table["model"], strict=True), table["status"],
                      strict=True))
    for pair in _matrix() - set(TRAINED):
        assert status[pair] == "not trained"
    assert status[("three-class", "resnet50")] == "trained"
    assert status[("normal-vs-rvo", "resnet50")] == "partial (1/4 folds)"
    markdown = (workdir / "report" / "summary.md").read_text()
    assert "SYNTHETIC" in markdown
    for task, model in _matrix():
        row = next(line for line in markdown.splitlines()
                   if line.startswith(f"| {task} | {model} |"))
        if (task, model) not in TRAINED:
            assert "| not trained |" in row


def _fold_metrics(workdir: Path, task: str, model: str) -> dict:
    return runs.read_fold(workdir, task, model, 0).metrics


def test_summary_values_are_the_summary_json_means(workdir):
    table = summary_table(workdir)
    written = pd.read_csv(workdir / "report" / "summary.csv")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(table.to_csv(index=False))), written)
    columns = {"single-label": {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
                                "auroc": "macro_auroc"},
               "multi-label": {"auroc": "macro_auroc", "top1_accuracy": "top1_accuracy"},
               "anomaly": {"accuracy": "accuracy", "auroc": "auroc", "f1": "f1"}}
    rows = table.set_index(["task", "model"])
    for task, model in set(TRAINED) - NO_SUMMARY_JSON:
        summary = json.loads((runs.run_directory(workdir, task, model) / runs.SUMMARY)
                             .read_text())
        row = rows.loc[(task, model)]
        assert row["n_test"] == summary["n_test"]
        for column, metric in columns[summary["kind"]].items():
            assert row[column] == pytest.approx(summary["metrics"][metric]["mean"])
            assert row[f"{column}_std"] == pytest.approx(summary["metrics"][metric]["std"])
    interrupted = _fold_metrics(workdir, "normal-vs-rvo", "resnet50")
    assert rows.loc[("normal-vs-rvo", "resnet50"), "accuracy"] == pytest.approx(
        interrupted["accuracy"])
    anomaly = _fold_metrics(workdir, "ganomaly", "ganomaly")
    assert rows.loc[("ganomaly", "ganomaly"), "baseline_accuracy"] == pytest.approx(
        anomaly["baseline_all_anomalous"]["accuracy"])
    assert rows.loc[("ganomaly", "ganomaly"), "baseline_f1"] == pytest.approx(
        anomaly["baseline_all_anomalous"]["f1"])
    # Multi-label: top-1 accuracy of always answering the most frequent of normal (no disease)
    # and the nine diseases, on the fold's test labels.
    classes = load_task("ten-class").classes
    labels = runs.read_fold(workdir, "ten-class", "resnet50", 0).predictions()[
        [f"label_{c}" for c in classes]].to_numpy().astype(bool)
    counts = [int((~labels.any(axis=1)).sum()), *labels.sum(axis=0)]
    assert rows.loc[("ten-class", "resnet50"), "baseline_accuracy"] == pytest.approx(
        max(counts) / len(labels))


def test_page_references_no_external_files(page):
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I)
    assert references
    for reference in references:
        assert reference.startswith(("data:image/png;base64,", "#")), reference[:80]
    assert "<script" not in page and "<link" not in page and "url(" not in page


def test_every_image_is_an_embedded_non_blank_picture(page):
    payloads = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(payloads) == page.count("<img")
    assert len(payloads) >= 15  # 4 kinds of figure per run, recon and EDA pictures
    for payload in payloads:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert min(pixels.shape) >= 100
        assert pixels.std() > 5  # not one flat colour


def _section(page: str, section_id: str) -> str:
    return page.split(f'<section id="{section_id}">', 1)[1].split("</section>", 1)[0]


def test_sections_show_each_trained_run(page):
    for task, model in TRAINED:
        title = f"{task} / {model}"
        for section_id in ("curves", "roc", "confusion"):
            assert title in _section(page, section_id), (title, section_id)
    assert "<img" in _section(page, "confusion").split("ganomaly / ganomaly", 1)[1]
    assert "multi-label, no single confusion matrix" in _section(page, "confusion")
    assert _section(page, "cv").count("<img") == 3  # three-class, normal-vs-amd, -rvo
    assert _section(page, "per-disease").count("<img") == 1
    assert "reconstructions.png" in _section(page, "reconstructions")
    assert _section(page, "eda").count("<img") == 1
    assert _section(page, "data").count("SYNTHETIC") >= len(TRAINED)
    assert "How to read this." in _section(page, "roc")
    assert "normal-vs-mh / resnet50" not in _section(page, "roc")


def test_empty_workdir_lists_the_matrix_and_says_each_section_is_empty(tmp_path):
    page = write_report(tmp_path).read_text()
    table = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert (table["status"] == "not trained").all() and len(table) == len(_matrix())
    assert "<img" not in page
    for section_id in ("curves", "cv", "per-disease", "roc", "anomaly", "reconstructions",
                       "eda"):
        assert 'class="empty"' in _section(page, section_id)


@pytest.mark.parametrize(("metrics", "text"), [
    ({"image_score": "top-k", "image_score_k": 5.0, "image_score_sigma": 1.0},
     "top 5% of the map, sigma 1 px"),
    ({"image_score": "max", "image_score_k": 1.0, "image_score_sigma": 2.5},
     "max of the map, sigma 2.5 px"),
    ({"image_score": "mean", "image_score_sigma": 1.0}, "mean of the map"),
    ({"image_score": "latent"}, "latent distance"),
    ({}, "not recorded"),  # metrics.json written before image scores existed
])
def test_anomaly_image_score_is_described_with_its_k_and_sigma(metrics, text):
    assert image_score_text(metrics) == text


def test_anomaly_section_lists_each_anomaly_run(page):
    section = _section(page, "anomaly")
    assert "<td>ganomaly / ganomaly</td><td>0</td>" in section
    assert "binary / resnet50" not in section  # supervised runs have their own sections


def _chromium() -> str:
    """The chromium binary; CI installs it (.ci/run), so there a missing one fails the test."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (see .ci/run)")
        pytest.skip("chromium is not installed (CI installs it and runs this test)")
    return found


def _screenshot(page: Path, out: Path, height: int) -> np.ndarray:
    """Headless Chromium's screenshot of `page`, 1200 px wide: uint8[height, 1200, 3]."""
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={out.parent / 'profile'}",
         f"--screenshot={out}", f"--window-size=1200,{height}", page.as_uri()],
        check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB"))


def test_chromium_renders_the_page(workdir, tmp_path):
    pixels = _screenshot(workdir / "report" / "index.html", tmp_path / "page.png", 2000)
    pixels = pixels.mean(axis=2)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 10
    assert (pixels < 128).mean() > 0.005  # text and figures, not an empty white page


CLINICAL_SECTIONS = ("calibration", "operating-points", "saliency", "comparisons")


def test_chromium_renders_the_clinical_sections(workdir, tmp_path):
    """The same page with every other section hidden (headless Chromium cannot scroll to an
    anchor before its screenshot): tables, reliability diagrams and saliency grids render."""
    hidden = ("body > :not(section), "
              + "".join(f"section:not(#{sid})" for sid in CLINICAL_SECTIONS))
    page = (workdir / "report" / "index.html").read_text().replace(
        "</head>", f"<style>{hidden} {{ display: none; }}</style></head>", 1)
    (tmp_path / "clinical.html").write_text(page)
    pixels = _screenshot(tmp_path / "clinical.html", tmp_path / "clinical.png", 3000)
    grey = pixels.mean(axis=2)
    assert grey.std() > 10
    assert (grey < 128).mean() > 0.02  # tables and captions
    colourful = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 60
    assert colourful.mean() > 0.005  # plot lines and the saliency pictures
    assert (grey[-200:] < 250).any()  # content reaches the bottom of the 3000 px shot


def test_style_sheet_and_notes_are_package_data():
    """style.css and howto.toml load through importlib.resources, and pyproject's package-data
    patterns ship them in a wheel (a non-editable install has no source tree to read)."""
    from importlib import resources

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["*"]
    data = [p for p in resources.files("jaxfundus.report").iterdir()
            if p.is_file() and not p.name.endswith((".py", ".pyc"))]
    assert {p.name for p in data} >= {"style.css", "howto.toml"}
    for path in data:
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), path.name
        assert path.read_text(encoding="utf-8").strip()


class _TableReader(HTMLParser):
    """The <table>s of an HTML fragment, as lists of rows of cell text."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(fragment: str) -> list[pd.DataFrame]:
    """Each table of a page section as a DataFrame of strings (header row = columns)."""
    reader = _TableReader()
    reader.feed(fragment)
    return [pd.DataFrame(rows[1:], columns=rows[0]) for rows in reader.tables]


def test_summary_table_shows_intervals(workdir, page):
    """Holdout: the number and its interval; cross-validated: mean ± std over folds, and the
    pooled out-of-fold number with its interval (from metrics.json / summary.json)."""
    metrics = _fold_metrics(workdir, "ganomaly", "ganomaly")
    low, high = metrics["auroc_ci"]
    assert low <= metrics["auroc"] <= high
    summary = {row["task"] + "/" + row["model"]: row
               for row in _tables(_section(page, "summary"))[0]
               .to_dict("records")}
    assert summary["ganomaly/ganomaly"]["AUROC"] == (
        f"{metrics['auroc']:.3f} [{low:.3f}, {high:.3f}]")
    accuracy = json.loads((runs.run_directory(workdir, "three-class", "resnet50")
                           / runs.SUMMARY).read_text())["metrics"]["accuracy"]
    low, high = accuracy["pooled_ci"]
    assert low <= accuracy["pooled"] <= high
    assert summary["three-class/resnet50"]["accuracy"] == (
        f"{accuracy['mean']:.3f} ± {accuracy['std']:.3f}; pooled {accuracy['pooled']:.3f} "
        f"[{low:.3f}, {high:.3f}]")
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", _section(page, "summary"))
    table = summary_table(workdir).set_index(["task", "model"])
    assert table.loc[("three-class", "resnet50"), "accuracy_ci_low"] == pytest.approx(low)


def test_reliability_diagram_per_supervised_run_pools_folds(workdir, page):
    section = _section(page, "calibration")
    supervised = [(t, m) for t, m in TRAINED if load_task(t).kind != "anomaly"]
    assert section.count("<img") == len(supervised)
    predictions = runs.pooled_predictions(
        [runs.read_fold(workdir, "three-class", "resnet50", k) for k in range(4)])
    classes = load_task("three-class").classes
    pooled_ece = expected_calibration_error(
        predictions[[f"prob_{c}" for c in classes]].to_numpy(),
        predictions["label"].map(classes.index).to_numpy())
    assert f"three-class / resnet50: test ECE {pooled_ece:.3f}, 4 folds pooled" in section
    scaled = _fold_metrics(workdir, "binary", "resnet50")["calibration"]
    assert (f"binary / resnet50: test ECE {scaled['ece_before']:.3f} before, "
            f"{scaled['ece_after']:.3f} after temperature scaling "
            f"(T = {scaled['temperature']:.2f}, fitted on validation)") in section


def test_pooled_reliability_equals_the_diagram_of_pooled_predictions():
    rng = np.random.default_rng(4)
    folds = [(rng.dirichlet(np.ones(3), n), rng.integers(0, 3, n)) for n in (40, 75, 9)]
    pooled = pooled_reliability([reliability_diagram(p, y).to_dict() for p, y in folds])
    direct = reliability_diagram(np.concatenate([p for p, _ in folds]),
                                 np.concatenate([y for _, y in folds]))
    assert pooled["count"] == direct.count.tolist()
    np.testing.assert_allclose(pooled["confidence"], direct.confidence, atol=1e-12)
    np.testing.assert_allclose(pooled["accuracy"], direct.accuracy, atol=1e-12)
    assert pooled["ece"] == pytest.approx(direct.ece, abs=1e-12)


def test_operating_points_state_the_validation_threshold_and_test_rates(workdir, page):
    section = _section(page, "operating-points")
    table = _tables(section)[0]
    for task, model in (("binary", "resnet50"), ("ganomaly", "ganomaly"),
                        ("normal-vs-amd", "resnet50")):
        rows = table[table["run"] == f"{task} / {model}"]
        points = _fold_metrics(workdir, task, model)["operating_points"]
        first = rows[rows["fold"] == "0"]
        assert list(first["target specificity"]) == ["90%", "95%"]
        for (_, row), point in zip(first.iterrows(), points, strict=True):
            assert row["threshold (validation)"].startswith(f"{point['threshold']:.4g} on ")
            assert float(row["test sensitivity"]) == pytest.approx(point["test_sensitivity"],
                                                                   abs=5e-4)
            assert float(row["test specificity"]) == pytest.approx(point["test_specificity"],
                                                                   abs=5e-4)
    assert "on prob_AMD" in section and "on score" in section
    assert "three-class / resnet50" not in section  # three classes: no single positive class


def test_saliency_section_embeds_each_runs_grid_and_the_pixel_auroc(workdir, page):
    section = _section(page, "saliency")
    assert section.count("<img") == len(WITH_SALIENCY)
    for task, model in WITH_SALIENCY:
        assert f"{task} / {model}, fold-0: test images and their Grad-CAM maps" in section
    table = _tables(section)[0]
    folds = [_fold_metrics(workdir, "three-class", "resnet50")]
    folds += [runs.read_fold(workdir, "three-class", "resnet50", k).metrics
              for k in range(1, 4)]
    row = table[(table["run"] == "three-class / resnet50") & (table["class"] == "DR")].iloc[0]
    values = [m["saliency_pixel_auroc"]["DR"] for m in folds]
    assert row["pixel AUROC"] == f"{np.mean(values):.3f} ± {np.std(values):.3f}"
    assert (row["chance"], row["images with masks"], row["folds"]) == ("0.5", "28", "4")
    assert "normal" not in set(table["class"])  # no lesions, no AUROC


def test_embedded_saliency_grids_are_downscaled_and_small(page):
    section = _section(page, "saliency")
    for payload in re.findall(r'<img src="data:image/png;base64,([^"]+)"', section):
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
        assert image.width <= 640 and image.mode == "P"
        assert len(payload) < 400_000  # a noise picture: the worst case for PNG


def test_models_of_a_task_are_compared_on_the_same_images(workdir, page):
    table = _tables(_section(page, "comparisons"))[0]
    [row] = table.to_dict("records")
    spec = load_task("binary")
    a, b = (runs.read_fold(workdir, "binary", m, 0).predictions()
            for m in ("simple-cnn", "resnet50"))
    expected = compare_predictions("binary", "simple-cnn", "resnet50", a, b,
                                   kind_of(spec).roc_targets(spec.classes))
    assert (row["task"], row["model a"], row["model b"]) == ("binary", "simple-cnn", "resnet50")
    assert row["a - b [95% CI]"] == (f"{expected.difference:+.3f} "
                                     f"[{expected.difference_ci[0]:+.3f}, "
                                     f"{expected.difference_ci[1]:+.3f}]")
    assert float(row["DeLong p"]) == pytest.approx(expected.p_value, rel=1e-2)
