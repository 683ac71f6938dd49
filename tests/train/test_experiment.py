"""Real smoke trainings through `commands.train` / `commands.evaluate` on the tiny synthetic
dataset: the results contract, resume, --retrain, and what eval refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from jaxfundus import commands, runs
from jaxfundus.config import ConfigError, load_task, task_names
from jaxfundus.data.tfds_dataset import build_dataset
from jaxfundus.data.top_source import DataError


def _train(tiny_data, workdir, **kwargs):
    kwargs.setdefault("preset", "smoke")
    return commands.train(data_dir=str(tiny_data.data_dir), workdir=str(workdir),
                          log=lambda _: None, **kwargs)


@pytest.mark.slow
def test_cross_validated_task_writes_the_results_contract(tiny_data, tmp_path):
    [summary] = _train(tiny_data, tmp_path, task="five-rare", model="simple-cnn")
    assert summary["folds_done"] == summary["folds_expected"] == 4
    classes = list(load_task("five-rare").classes)
    tested, folds = [], []
    for number in range(4):
        fold = runs.read_fold(tmp_path, "five-rare", "simple-cnn", number)
        folds.append(fold)
        for name in (runs.HISTORY, runs.SPLIT, runs.PREDICTIONS, runs.METRICS, runs.CONFIG):
            assert (fold.directory / name).is_file(), name
        assert any(fold.checkpoints.iterdir())
        split = fold.split()
        patients = {s: set(split.patient_id[split.split == s]) for s in ("train", "val", "test")}
        assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
        assert not patients["train"] & patients["val"]
        predictions = fold.predictions()
        assert set(predictions.filename) == set(split.filename[split.split == "test"])
        tested += predictions.filename.tolist()
        probs = predictions[[f"prob_{c}" for c in classes]].to_numpy()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
        metrics = fold.metrics
        labels = predictions.label.map(classes.index).to_numpy()
        preds = predictions.pred.map(classes.index).to_numpy()
        assert np.array_equal(preds, probs.argmax(1))
        assert metrics["n_test"] == len(predictions)
        assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, preds))
        assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
        assert metrics["macro_auroc"] == pytest.approx(
            roc_auc_score(labels, probs, multi_class="ovr", labels=range(5)), abs=1e-6)
        config = fold.config
        assert config["data"]["fingerprint"] and config["versions"]["jax"]
        assert (config["fold"], config["folds"]) == (number, 4)
        assert config["split_counts"] == {s: int((split.split == s).sum())
                                          for s in ("train", "val", "test")}
        assert len(fold.history()) == 2
    assert len(tested) == len(set(tested))  # each image tested in exactly one fold
    assert sorted(tested) == sorted(folds[0].split().filename)  # ... and every image once
    on_disk = json.loads((runs.run_directory(tmp_path, "five-rare", "simple-cnn")
                          / runs.SUMMARY).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for name in ("accuracy", "balanced_accuracy", "macro_auroc"):
        per_fold = [fold.metrics[name] for fold in folds]
        entry = summary["metrics"][name]
        assert entry["per_fold"] == pytest.approx(per_fold)
        assert entry["mean"] == pytest.approx(np.mean(per_fold))
        assert entry["std"] == pytest.approx(np.std(per_fold))
    assert summary["n_test"] == sum(fold.metrics["n_test"] for fold in folds)


@pytest.mark.slow
def test_finished_run_is_not_retrained(early_stopped_run, tmp_path):
    run = early_stopped_run.copy_to(tmp_path)
    metrics = run.fold / runs.METRICS
    before = metrics.stat().st_mtime_ns
    lines = []
    run.train(log=lines.append)
    assert metrics.stat().st_mtime_ns == before
    assert f"fold 0: already trained ({run.fold}); pass --retrain to train again" in lines


def _step_folders(fold_dir) -> dict[int, int]:
    """Checkpoint step -> inode of its folder (a new folder is a new save)."""
    return {int(p.name): p.stat().st_ino for p in (fold_dir / runs.CHECKPOINTS).iterdir()
            if p.name.isdigit()}


@pytest.mark.slow
def test_retrain_trains_a_finished_run_again_from_the_start(early_stopped_run, tmp_path):
    run = early_stopped_run.copy_to(tmp_path)
    saved = _step_folders(run.fold)
    history = (run.fold / runs.HISTORY).read_text()
    predictions = pd.read_csv(run.fold / runs.PREDICTIONS)
    (run.fold / "notes.txt").write_text("left in the fold folder")
    lines = []
    run.train(log=lines.append, retrain=True)
    assert not any("already trained" in line or "resuming" in line for line in lines)
    assert not (run.fold / "notes.txt").exists()  # the fold folder was started afresh
    retrained = _step_folders(run.fold)
    assert sorted(retrained) == sorted(saved)  # same seed, same data: the same steps ...
    assert not set(retrained.values()) & set(saved.values())  # ... saved anew
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == len(pd.read_csv(run.fold / runs.HISTORY))
    # Same seed and data on CPU: the same numbers as the first training.
    assert (run.fold / runs.HISTORY).read_text().count("\n") == history.count("\n")
    pd.testing.assert_frame_equal(pd.read_csv(run.fold / runs.PREDICTIONS), predictions)


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_is_scored_without_training_again(
        early_stopped_run, tmp_path):
    """The state a kill leaves between the last checkpoint and the results: checkpoints on
    disk, no predictions.csv or metrics.json, and (killed before history.csv was rewritten)
    the last epoch missing from history.csv."""
    run = early_stopped_run.copy_to(tmp_path)
    history = (run.fold / runs.HISTORY).read_text()
    predictions = pd.read_csv(run.fold / runs.PREDICTIONS)
    metrics = json.loads((run.fold / runs.METRICS).read_text())
    saved = _step_folders(run.fold)
    for name in (runs.METRICS, runs.PREDICTIONS):
        (run.fold / name).unlink()
    (run.fold / runs.HISTORY).write_text("".join(history.splitlines(keepends=True)[:-1]))
    lines = []
    [summary] = run.train(log=lines.append)
    assert f"resuming from checkpoint at step {max(saved)} (epoch " in "\n".join(lines)
    assert not [line for line in lines if line.startswith("epoch ")]  # no epoch trained
    assert _step_folders(run.fold) == saved  # no checkpoint written
    assert (run.fold / runs.HISTORY).read_text() == history  # no new rows; the lost one back
    pd.testing.assert_frame_equal(pd.read_csv(run.fold / runs.PREDICTIONS), predictions)
    again = json.loads((run.fold / runs.METRICS).read_text())
    for name in ("accuracy", "balanced_accuracy", "macro_auroc", "n_test"):
        assert again[name] == pytest.approx(metrics[name])
    assert summary["folds_done"] == 1


@pytest.mark.slow
def test_eval_refuses_a_run_whose_split_the_data_no_longer_gives(early_stopped_run, tiny_data,
                                                                 tmp_path):
    run = early_stopped_run.copy_to(tmp_path)
    # The same source with one tested image's row removed, prepared into a new data folder.
    source = tmp_path / "source"
    shutil.copytree(tiny_data.source_dir, source)
    tested = pd.read_csv(run.fold / runs.PREDICTIONS).filename.iloc[0]
    rows = pd.read_csv(source / "data.csv", dtype=str, keep_default_na=False)
    rows[rows.filename != tested].to_csv(source / "data.csv", index=False)
    build_dataset(source, tmp_path / "data", image_size=32)
    metrics = (run.fold / runs.METRICS).read_text()
    with pytest.raises(DataError, match=(
            f"^the data no longer gives the split saved in {run.fold / runs.SPLIT}; evaluate "
            "with the data the run was trained on$")):
        commands.evaluate(task=run.task, model=run.model, workdir=str(run.workdir),
                          data_dir=str(tmp_path / "data"), log=lambda _: None)
    assert (run.fold / runs.METRICS).read_text() == metrics  # nothing rewritten


def test_eval_all_with_nothing_trained_lists_the_matrix_and_writes_the_report(tmp_path):
    lines = []
    assert commands.evaluate(all_tasks=True, workdir=str(tmp_path), log=lines.append) == []
    pairs = [f"{task}/{model}" for task in task_names() for model in load_task(task).models]
    assert f"not trained ({len(pairs)}): {', '.join(pairs)}" in lines
    table = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert len(table) == len(pairs) and (table.status == "not trained").all()


def test_eval_of_an_untrained_task_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=f"^nothing to evaluate: binary/simple-cnn, "
                                          f"binary/inception-v3, binary/resnet50 not trained "
                                          f"in {tmp_path}$"):
        commands.evaluate(task="binary", workdir=str(tmp_path), log=lambda _: None)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_multi_label_task_scores_each_disease(tiny_data, tmp_path):
    _train(tiny_data, tmp_path, task="ten-class", model="simple-cnn")
    fold = runs.read_fold(tmp_path, "ten-class", "simple-cnn", 0)
    predictions, metrics = fold.predictions(), fold.metrics
    classes = list(load_task("ten-class").classes)
    assert set(metrics["auroc"]) == set(classes)
    aurocs = []
    for disease, value in metrics["auroc"].items():
        labels = predictions[f"label_{disease}"]
        if 0 < labels.sum() < len(labels):
            expected = roc_auc_score(labels, predictions[f"prob_{disease}"])
            assert value == pytest.approx(expected, abs=1e-6)
            aurocs.append(expected)
        else:
            assert value is None  # undefined on a test split with one class
    assert aurocs and metrics["macro_auroc"] == pytest.approx(np.mean(aurocs), abs=1e-6)
    labels = predictions[[f"label_{c}" for c in classes]].to_numpy()
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    # top-1 of the study's 10 exclusive classes: normal (P = prod(1 - p), no disease) or one
    # of the diseases the image has.
    scores = np.column_stack([np.prod(1 - probs, axis=1), probs])
    truth = np.column_stack([labels.sum(1) == 0, labels == 1])
    top1 = truth[np.arange(len(labels)), scores.argmax(1)]
    assert metrics["top1_accuracy"] == pytest.approx(top1.mean())
    exact = ((probs >= 0.5) == (labels == 1)).all(axis=1)
    assert metrics["exact_match_accuracy"] == pytest.approx(exact.mean())
