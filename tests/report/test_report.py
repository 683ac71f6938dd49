"""The report from a workdir of contract files: every matrix row, summary.json means, one
self-contained page whose embedded images are real pictures, and a page Chromium can render."""

from __future__ import annotations

import base64
import fnmatch
import io
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxfundus import runs
from jaxfundus.config import load_task, task_names
from jaxfundus.evaluate.results import anomaly_results, supervised_results
from jaxfundus.report import summary_table, write_report

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
           ("ganomaly", "ganomaly"): 1}
NO_SUMMARY_JSON = {("normal-vs-rvo", "resnet50")}


def _examples(n: int, fold: int) -> pd.DataFrame:
    return pd.DataFrame({"filename": [f"f{fold}_{i:03d}.jpg" for i in range(n)],
                         "patient_id": [f"{fold}{i // 2:03d}" for i in range(n)]})


def _fold_results(rng, kind: str, classes: tuple[str, ...], fold: int):
    """predictions.csv and metrics.json contents from the real results functions."""
    n = 60
    frame = _examples(n, fold)
    if kind == "anomaly":
        frame["label"] = (rng.random(n) < 0.8).astype(np.int64)
        val_labels = np.r_[0, 1, (rng.random(30) < 0.5).astype(np.int64)]
        return anomaly_results(frame, rng.normal(size=n) + frame["label"].to_numpy(), val_labels,
                               rng.normal(size=val_labels.size) + val_labels, criterion="f1",
                               manual_threshold=None)
    if kind == "multi-label":
        labels = (rng.random((n, len(classes))) < 0.3).astype(np.int64)
        labels[:len(classes), :] = np.eye(len(classes), dtype=np.int64)  # every class occurs
        for i, name in enumerate(classes):
            frame[f"label_{name}"] = labels[:, i]
        probs = 0.3 * labels + 0.7 * rng.random(labels.shape)
        return supervised_results(frame, probs, classes, multi_label=True)
    frame["label"] = rng.integers(0, len(classes), n)
    logits = rng.normal(size=(n, len(classes))) + 1.5 * np.eye(len(classes))[frame["label"]]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return supervised_results(frame, probs, classes, multi_label=False)


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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    for (task, model), n_folds in TRAINED.items():
        spec = load_task(task)
        for fold in range(n_folds):
            directory = runs.fold_directory(root, task, model, fold)
            predictions, metrics = _fold_results(rng, spec.kind, spec.classes, fold)
            metrics.update(task=task, model=model, fold=fold, preset="smoke")
            runs.write_history(directory, _history(rng, spec.kind).to_dict("records"))
            runs.write_fold_config(directory, _config(task, model, fold))
            runs.write_fold_results(directory, predictions, metrics)
        if (task, model) not in NO_SUMMARY_JSON:
            runs.write_summary(root, spec, model)
    _picture(270, 180, 1).save(root / "ganomaly" / "ganomaly" / "fold-0" / "reconstructions.png")
    (root / "eda").mkdir()
    _picture(300, 200, 2).save(root / "eda" / "age_sex.png")
    (root / "eda" / "summary.md").write_text("# EDA\n\n900 images of 450 patients\n")
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
    return json.loads((workdir / task / model / "fold-0" / "metrics.json").read_text())


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
        summary = json.loads((workdir / task / model / "summary.json").read_text())
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
    assert rows.loc[("ten-class", "resnet50"), "baseline_accuracy"] > 0


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
    for section_id in ("curves", "cv", "per-disease", "roc", "reconstructions", "eda"):
        assert 'class="empty"' in _section(page, section_id)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_renders_the_page(workdir, tmp_path):
    screenshot = tmp_path / "page.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={screenshot}", "--window-size=1200,2000",
         (workdir / "report" / "index.html").as_uri()],
        check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 10
    assert (pixels < 128).mean() > 0.005  # text and figures, not an empty white page


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
