"""The one loop's own behaviour on real smoke trainings: host syncs, NaN guard, bfloat16."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxfundus.config import load_task, resolve_config
from jaxfundus.data.datasets import open_dataset
from jaxfundus.data.pipeline import steps_per_epoch
from jaxfundus.experiment import plan_folds
from jaxfundus.methods import make_method
from jaxfundus.train.loop import Trainer, TrainingDiverged
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


def test_step_metrics_reach_the_host_at_log_points_not_every_step(tiny_data, tmp_path):
    config, fold = _fold(tiny_data, epochs=2, log_every_steps=0)
    trainer, n_steps = _trainer(config, fold)
    assert n_steps >= 3
    result = trainer.fit(fold.data("train"), fold.data("val"), tmp_path, log=lambda _: None)
    assert trainer.host_fetches == 2  # one per epoch, for n_steps >= 3 steps each
    assert len(result.history) == 2

    config, fold = _fold(tiny_data, epochs=1, log_every_steps=2)
    trainer, n_steps = _trainer(config, fold)
    trainer.fit(fold.data("train"), fold.data("val"), tmp_path / "every-2", log=lambda _: None)
    assert trainer.host_fetches == math.ceil(n_steps / 2) < n_steps


def test_logged_epoch_means_do_not_depend_on_how_often_metrics_are_fetched(tiny_data, tmp_path):
    histories = []
    for every in (0, 1):
        config, fold = _fold(tiny_data, epochs=1, log_every_steps=every)
        trainer, _ = _trainer(config, fold)
        result = trainer.fit(fold.data("train"), fold.data("val"), tmp_path / str(every),
                             log=lambda _: None)
        histories.append(result.history[0])
    assert histories[0]["train_loss"] == pytest.approx(histories[1]["train_loss"], rel=1e-5)
    assert histories[0]["train_accuracy"] == pytest.approx(histories[1]["train_accuracy"])


def test_divergence_names_the_step_range_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    config, fold = _fold(tiny_data, epochs=3, learning_rate=1e30, log_every_steps=0,
                         checkpoint_every_steps=0)
    trainer, n_steps = _trainer(config, fold)
    with pytest.raises(TrainingDiverged) as caught:
        trainer.fit(fold.data("train"), fold.data("val"), tmp_path, log=lambda _: None)
    message = str(caught.value)
    assert "non-finite in steps 1-" in message or f"steps {n_steps + 1}-" in message
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    if "steps 1-" in message:
        assert "no checkpoint was saved yet" in message and kept == []
    else:
        assert f"the last good checkpoint (step {n_steps})" in message and kept == [str(n_steps)]


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
