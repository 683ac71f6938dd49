"""`commands.predict` (what `invoke predict` runs) against what training and eval computed for
the same test images, and the mistakes it refuses before loading any model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxfundus import commands, runs
from jaxfundus.config import ConfigError, load_task, resolve_config
from jaxfundus.data.datasets import open_dataset


def _stored_test_images(run, folder: Path, count: int) -> pd.DataFrame:
    """Up to `count` rows of a run's predictions.csv, as many of each decision (`pred`) as
    there are, each test image written to `folder` as a PNG of exactly the pixels training
    read (prepared data: letterboxed, stored size), so predict sees what eval saw. Rows get
    a `file` column: the PNG's path."""
    predictions = pd.read_csv(run.fold / runs.PREDICTIONS)
    groups = predictions.groupby("pred", sort=True)
    predictions = groups.head(max(1, count // groups.ngroups)).head(count)
    dataset = open_dataset(run.data_dir, 32, log=lambda _: None)
    index = dataset.index.set_index("filename")["index"]
    folder.mkdir()
    files = []
    for filename in predictions.filename:
        path = folder / f"{Path(filename).stem}.png"
        Image.fromarray(np.asarray(dataset.source[int(index[filename])]["image"])).save(path)
        files.append(str(path))
    return predictions.assign(file=files)


def _predict(run, folder: Path, as_json: bool) -> list[str]:
    lines, warnings = [], []
    failures = commands.predict(task=run.task, model=run.model, folder=str(folder),
                                as_json=as_json, workdir=str(run.workdir), log=lines.append,
                                warn=warnings.append)
    assert (failures, warnings) == (0, [])
    return lines


@pytest.mark.slow
def test_predict_gives_what_eval_computed_for_the_same_test_image(early_stopped_run, tmp_path):
    run = early_stopped_run
    expected = _stored_test_images(run, tmp_path / "photos", count=8)
    classes = load_task(run.task).classes
    records = [json.loads(line) for line in _predict(run, tmp_path / "photos", as_json=True)]
    assert [r["file"] for r in records] == sorted(expected.file)
    for record in records:
        row = expected[expected.file == record["file"]].iloc[0]
        probs = [record["probabilities"][c] for c in classes]
        np.testing.assert_allclose(probs, row[[f"prob_{c}" for c in classes]].to_numpy(float),
                                   atol=1e-5)
        assert record["prediction"] == row["pred"] == classes[int(np.argmax(probs))]
    assert len({r["prediction"] for r in records} | set(expected.label)) > 1  # not one answer


@pytest.mark.slow
def test_predict_prints_one_ranked_line_per_image_by_default(early_stopped_run, tmp_path):
    run = early_stopped_run
    expected = _stored_test_images(run, tmp_path / "photos", count=4)
    lines = _predict(run, tmp_path / "photos", as_json=False)
    classes = load_task(run.task).classes
    assert len(lines) == len(expected) == 4
    for line, (_, row) in zip(lines, expected.sort_values("file").iterrows(), strict=True):
        ranked = sorted(classes, key=lambda c: -row[f"prob_{c}"])
        probs = ", ".join(f"{c} {row[f'prob_{c}']:.3f}" for c in ranked)
        assert line == f"{row['file']}: {row['pred']} ({probs})"


@pytest.mark.slow
def test_anomaly_prediction_is_the_normalised_score_against_the_validation_threshold(
        vae_run, tmp_path):
    run = vae_run.copy_to(tmp_path)  # predict may write pictures into the run folder
    expected = _stored_test_images(run, tmp_path / "photos", count=12)
    metrics = json.loads((run.fold / runs.METRICS).read_text())
    records = [json.loads(line) for line in _predict(run, tmp_path / "photos", as_json=True)]
    texts = _predict(run, tmp_path / "photos", as_json=False)
    assert metrics["threshold_source"] == "validation"
    for record, text in zip(records, texts, strict=True):
        row = expected[expected.file == record["file"]].iloc[0]
        # predictions.csv holds the score on the validation-normalised scale eval used. One
        # image against eval's batch: float32 convolutions sum in another order, and the
        # max-pooled map carries that (~2e-5 here) into the score.
        assert record["score"] == pytest.approx(row["score"], abs=1e-4)
        assert record["threshold"] == pytest.approx(metrics["threshold"])
        decided = record["score"] >= metrics["threshold"]
        assert record["anomalous"] == bool(row["pred"]) == decided
        verdict = "ANOMALOUS" if record["anomalous"] else "normal"
        assert text.startswith(f"{record['file']}: score {record['score']:.4f} (threshold "
                               f"{metrics['threshold']:.4f}) {verdict}")
    assert {r["anomalous"] for r in records} == {True, False}  # both decisions among the 12


@pytest.mark.parametrize("paths", [{"image": "a.jpg", "folder": "photos"}, {}])
def test_predict_needs_exactly_one_of_image_and_folder(tmp_path, paths):
    with pytest.raises(ConfigError, match=r"^give exactly one of --image PATH or --folder DIR$"):
        commands.predict(task="binary", workdir=str(tmp_path), **paths)


def test_predict_on_an_untrained_task_says_how_to_train_it(tmp_path):
    photo = tmp_path / "eye.png"
    Image.new("RGB", (40, 30)).save(photo)
    with pytest.raises(ConfigError, match=(
            f"^binary/simple-cnn is not trained in {tmp_path}; run `invoke train "
            r"--task=binary --model=simple-cnn` first$")):
        commands.predict(task="binary", image=str(photo), workdir=str(tmp_path))


def test_predict_on_a_run_without_a_finished_fold_is_refused(tmp_path):
    """A run killed in its first fold: config.json written, no metrics.json."""
    photo = tmp_path / "eye.png"
    Image.new("RGB", (40, 30)).save(photo)
    config = resolve_config("three-class", "simple-cnn", "smoke", workdir=str(tmp_path))
    for fold in range(2):
        runs.write_fold_config(runs.fold_directory(tmp_path, "three-class", "simple-cnn", fold),
                               config.to_dict())
    with pytest.raises(ConfigError, match=(
            f"^three-class/simple-cnn in {tmp_path} has no finished fold$")):
        commands.predict(task="three-class", model="simple-cnn", image=str(photo),
                         workdir=str(tmp_path))
