"""Run checkpoints on disk: what is kept, across a resume, and what happens to damaged ones."""

from __future__ import annotations

import os
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfundus.train.checkpoint import DAMAGED_DIR, CheckpointError, RunCheckpoints, abstract_like


def _state(value: float) -> dict:
    return {"w": jnp.full((256,), value, jnp.float32)}


def _iterator():
    return iter(grain.MapDataset.range(100).to_iter_dataset())


def _abstract():
    return abstract_like(_state(0.0), jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def _steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _save_all(directory: Path, saves: list[tuple[int, int | None]]) -> None:
    checkpoints = RunCheckpoints(directory)
    for step, rank in saves:
        checkpoints.save(step, _state(float(step)), _iterator(), {"step": step}, best_rank=rank)
    checkpoints.wait()
    checkpoints.close()


def test_latest_and_best_are_kept_also_after_a_restart(tmp_path):
    directory = tmp_path / "checkpoints"
    # Epoch ends at 10 (new best), 20 (new best), 30 (worse); mid-epoch saves in between.
    _save_all(directory, [(10, 1), (15, None), (20, 2), (25, None), (30, None)])
    assert _steps(directory) == [20, 30]
    # A resumed run (a new manager) still knows 20 is the best and keeps it.
    _save_all(directory, [(35, None), (40, None)])
    assert _steps(directory) == [20, 40]
    checkpoints = RunCheckpoints(directory)
    state, meta = checkpoints.restore(20, _abstract())
    assert meta == {"step": 20} and np.all(np.asarray(state["w"]) == 20.0)
    checkpoints.close()


def _truncate(step_dir: Path) -> None:
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.stat().st_size:
            os.truncate(path, path.stat().st_size // 2)


def test_an_unreadable_newest_checkpoint_is_set_aside_for_the_next_newest(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_all(directory, [(10, 1), (12, None)])
    _truncate(directory / "12")
    lines = []
    checkpoints = RunCheckpoints(directory)
    step, state, meta = checkpoints.restore_newest_readable(_abstract(), _iterator(),
                                                            lines.append)
    checkpoints.close()
    assert (step, meta) == (10, {"step": 10}) and np.all(np.asarray(state["w"]) == 10.0)
    [line] = lines
    aside = tmp_path / DAMAGED_DIR / "step-12"
    assert line.startswith(f"the checkpoint at step 12 in {directory} is unreadable: ")
    assert line.endswith(f"moved it to {aside}") and (aside / "state").is_dir()
    assert _steps(directory) == [10]


def test_no_readable_checkpoint_raises_a_one_line_error(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_all(directory, [(10, 1)])
    _truncate(directory / "10")
    checkpoints = RunCheckpoints(directory)
    with pytest.raises(CheckpointError, match="no checkpoint in .* restores .* --retrain"):
        checkpoints.restore_newest_readable(_abstract(), _iterator(), lambda _: None)
    checkpoints.close()
    assert RunCheckpoints(directory).restore_newest_readable(
        _abstract(), _iterator(), lambda _: None) is None  # nothing left: a fresh start


def test_unreadable_named_step_is_a_checkpoint_error(tmp_path):
    directory = tmp_path / "checkpoints"
    _save_all(directory, [(10, 1)])
    _truncate(directory / "10")
    checkpoints = RunCheckpoints(directory)
    with pytest.raises(CheckpointError, match=f"step 10 in {directory} is unreadable"):
        checkpoints.restore(10, _abstract())
    checkpoints.close()
