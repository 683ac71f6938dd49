"""The one loop's own behaviour: host syncs, NaN guard, bfloat16 (real smoke trainings), how
the best epoch is chosen, early stopping and the best state at the end of a run."""

from __future__ import annotations

import math

import jax
import numpy as np
import pandas as pd
import pytest

from jaxfundus import runs
from jaxfundus.config import load_task, resolve_config
from jaxfundus.data.datasets import open_dataset
from jaxfundus.data.pipeline import steps_per_epoch
from jaxfundus.experiment import plan_folds
from jaxfundus.methods import make_method
from jaxfundus.train.checkpoint import RunCheckpoints, abstract_like
from jaxfundus.train.loop import LoopState, Trainer, TrainingDiverged
from jaxfundus.train.mesh import DataParallel


def _fold(tiny_data, task="binary", **overrides):
    config = resolve_config(task, "simple-cnn", "smoke", data_dir=str(tiny_data.data_dir),
                            **overrides)
    dataset = open_dataset(config.data_dir, config.image_size, log=lambda _: None)
    [fold] = plan_folds(load_task(task), config, dataset)
    return config, fold


def _trainer(config, fold):
    n_steps = steps_per_epoch(int((fold.split == "train").sum()), config.batch_size)
    return Trainer(make_method(load_task(config.task), config, n_steps), config,
                   DataParallel()), n_steps


@pytest.fixture(scope="module")
def fetch_schedules(tiny_data, tmp_path_factory) -> dict[int, tuple[int, int, list[dict]]]:
    """log_every_steps -> (host fetches, steps per epoch, history) of one two-epoch smoke
    training each: fetching only at epoch ends (0), every step (1) and every second step (2).
    Same seed, data and schedule, so the three are the same training (one compilation, the
    others load it from the compilation cache)."""
    schedules = {}
    for every in (0, 1, 2):
        config, fold = _fold(tiny_data, epochs=2, log_every_steps=every)
        trainer, n_steps = _trainer(config, fold)
        result = trainer.fit(fold.data("train"), fold.data("val"),
                             tmp_path_factory.mktemp(f"every-{every}"), log=lambda _: None)
        schedules[every] = (trainer.host_fetches, n_steps, result.history)
    return schedules


@pytest.mark.slow
def test_step_metrics_reach_the_host_at_log_points_not_every_step(fetch_schedules):
    fetches, n_steps, history = fetch_schedules[0]
    assert n_steps >= 3 and len(history) == 2
    assert fetches == 2  # one per epoch, for n_steps >= 3 steps each
    assert fetch_schedules[1][0] == 2 * n_steps
    assert fetch_schedules[2][0] == 2 * math.ceil(n_steps / 2) < 2 * n_steps


@pytest.mark.slow
def test_logged_epoch_means_do_not_depend_on_how_often_metrics_are_fetched(fetch_schedules):
    histories = [history for _, _, history in fetch_schedules.values()]
    for history in histories[1:]:
        for epoch, row in enumerate(history):
            reference = histories[0][epoch]
            assert row["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)
            assert row["train_accuracy"] == pytest.approx(reference["train_accuracy"])


@pytest.mark.slow
def test_divergence_names_the_step_range_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    config, fold = _fold(tiny_data, epochs=3, learning_rate=1e30, log_every_steps=0,
                         checkpoint_every_steps=0)
    trainer, n_steps = _trainer(config, fold)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit(fold.data("train"), fold.data("val"), tmp_path, log=lambda _: None)
    message = str(caught.value)
    assert "non-finite in steps 1-" in message or f"steps {n_steps + 1}-" in message
    kept = sorted(p.name for p in (tmp_path / runs.CHECKPOINTS).iterdir() if p.name.isdigit())
    if "steps 1-" in message:
        assert "no checkpoint was saved yet" in message and kept == []
    else:
        assert f"the last good checkpoint (step {n_steps})" in message and kept == [str(n_steps)]


@pytest.mark.slow
def test_bfloat16_training_follows_float32_losses(tiny_data):
    """Same data, same initial weights: bf16 compute (f32 params, optimizer and BatchNorm
    statistics) tracks f32 losses within 2% over five steps."""
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config, fold = _fold(tiny_data, dtype=dtype)
        trainer, _ = _trainer(config, fold)
        state = trainer.init_state()
        floats = [x.dtype for x in jax.tree.leaves(state.params)
                  + jax.tree.leaves(state.rest) + jax.tree.leaves(state.opt)
                  if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
        assert floats and set(floats) == {np.dtype(np.float32)}
        data = fold.data("train")
        rng = np.random.default_rng(0)
        batch = {"image": np.stack([np.asarray(data.source[int(i)]["image"])
                                    for i in data.indices[:config.batch_size]]),
                 "target": data.targets[:config.batch_size], "mask": np.ones(16, bool),
                 "example_id": rng.integers(0, 100, (config.batch_size, 2)).astype(np.int32)}
        batch = trainer.parallel.put_batch(batch)
        losses[dtype] = []
        for _ in range(5):
            state, metrics = trainer.train_step(state, batch)
            losses[dtype].append(float(metrics["loss"]))
    assert np.allclose(losses["bfloat16"], losses["float32"], rtol=0.02)
    assert losses["float32"][-1] < losses["float32"][0]  # the steps do train


def _scored(scores: list[float]) -> tuple[LoopState, list[bool]]:
    """A LoopState after epochs of 10 steps each with these validation scores."""
    loop, improved = LoopState(), []
    for score in scores:
        loop.step += 10
        improved.append(loop.end_epoch({"epoch": loop.epoch + 1}, score))
    return loop, improved


@pytest.mark.parametrize(("scores", "best_epoch", "improved"), [
    ([0.5, 0.7, 0.7, 0.6], 2, [True, True, False, False]),  # the first of tied scores
    ([0.6, 0.6, 0.6], 1, [True, False, False]),
    ([math.nan, 0.4, math.nan, 0.4], 2, [True, True, False, False]),  # a first NaN is replaced
    ([math.nan, math.nan, 0.1], 3, [True, False, True]),
    ([0.3, math.nan, 0.2, math.inf], 1, [True, False, False, False]),  # never a non-finite best
    ([math.nan, math.nan], 1, [True, False]),  # some epoch must be kept
])
def test_best_epoch_is_the_first_of_ties_and_never_a_later_nan(scores, best_epoch, improved):
    loop, flags = _scored(scores)
    assert flags == improved
    assert (loop.best_epoch, loop.best_step) == (best_epoch, 10 * best_epoch)
    assert loop.best_rank == sum(improved)
    assert loop.epochs_without_improvement == len(scores) - best_epoch
    assert [row["epoch"] for row in loop.history] == list(range(1, len(scores) + 1))


def test_early_stop_after_patience_epochs_without_improvement():
    loop, _ = _scored([0.5, 0.7, 0.6, 0.6])
    assert loop.early_stopped(patience=2) and not loop.early_stopped(patience=3)
    assert not loop.early_stopped(patience=0)  # 0 switches early stopping off
    assert LoopState.from_json(loop.to_json()) == loop  # as saved with every checkpoint


def _saved_steps(fold_dir) -> list[int]:
    return sorted(int(p.name) for p in (fold_dir / runs.CHECKPOINTS).iterdir()
                  if p.name.isdigit())


def _loop_state(fold_dir) -> LoopState:
    """The bookkeeping saved with the newest checkpoint of a run's fold."""
    checkpoints = RunCheckpoints(fold_dir / runs.CHECKPOINTS)
    try:
        return LoopState.from_json(checkpoints.read_meta(checkpoints.latest_step()))
    finally:
        checkpoints.close()


def _saved_run(run):
    """(config, fold, trainer, steps per epoch) of a finished run, as it was trained."""
    config = runs.saved_config(run.workdir, run.task, run.model)
    dataset = open_dataset(config.data_dir, config.image_size, log=lambda _: None)
    [fold] = plan_folds(load_task(run.task), config, dataset)
    trainer, n_steps = _trainer(config, fold)
    return config, fold, trainer, n_steps


@pytest.mark.slow
def test_training_stops_after_patience_epochs_without_a_better_validation_score(
        early_stopped_run):
    run = early_stopped_run
    _, _, trainer, n_steps = _saved_run(run)
    history = pd.read_csv(run.fold / runs.HISTORY)
    scores = history[f"val_{trainer.method.selection_metric}"].to_numpy()
    best_epoch = int(np.argmax(scores)) + 1  # argmax: the first of tied scores
    loop = _loop_state(run.fold)
    assert len(history) < run.epochs  # stopped early
    assert loop.best_epoch == best_epoch and loop.early_stopped(run.patience)
    # Every epoch after the best was no better, and training stopped at the patience-th one.
    assert len(history) == best_epoch + run.patience == loop.epoch
    assert (scores[best_epoch:] <= scores[best_epoch - 1]).all()
    # Retention: the best epoch's checkpoint and the latest, nothing else.
    assert loop.best_step == best_epoch * n_steps
    assert _saved_steps(run.fold) == [loop.best_step, len(history) * n_steps]


@pytest.mark.slow
def test_a_run_is_scored_with_its_best_checkpoint_not_its_latest(early_stopped_run):
    run = early_stopped_run
    _, fold, trainer, _ = _saved_run(run)
    best, latest = _saved_steps(run.fold)
    test = fold.data("test")
    checkpoints = RunCheckpoints(run.fold / runs.CHECKPOINTS)
    template = abstract_like(trainer.init_state(), trainer.parallel.replicated)
    try:
        probs = {step: trainer.predict(checkpoints.restore(step, template)[0], test)["probs"]
                 for step in (best, latest)}
    finally:
        checkpoints.close()
    saved = pd.read_csv(run.fold / runs.PREDICTIONS)
    saved_probs = saved[[f"prob_{c}" for c in load_task(run.task).classes]].to_numpy()
    # fit() handed the best state to scoring: predictions.csv is the best checkpoint's.
    np.testing.assert_allclose(saved_probs, probs[best], atol=1e-6)
    assert np.abs(saved_probs - probs[latest]).max() > 1e-3  # the latest would differ
    restored = trainer.predict(trainer.restore_best(run.fold), test)["probs"]
    np.testing.assert_allclose(restored, probs[best], atol=1e-6)  # what eval and predict use
