"""Orbax checkpoints of a run: train state, Grain iterator state and loop bookkeeping.

The latest checkpoint and the best (by validation metric) are kept; Orbax writes each step to
a temporary directory and renames it, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class RunCheckpoints:
    """Save/restore {state, data iterator, meta} under `directory`."""

    def __init__(self, directory: Path) -> None:
        keep = policies.AnyPreservationPolicy([
            policies.LatestN(n=1),
            # Only new-best saves carry a metric (their rank); the highest rank is the best.
            policies.BestN(get_metric_fn=lambda m: m["best_rank"], n=1,
                           keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=True)
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, data_iterator: grain.DatasetIterator, meta: dict[str, Any],
             best_rank: int | None) -> None:
        """Save; `best_rank` (1, 2, ... for each new best) marks a checkpoint as the new best."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(meta),
        )
        metrics = None if best_rank is None else {"best_rank": best_rank}
        self._manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state,
                data_iterator: grain.DatasetIterator | None = None):
        """-> (state, meta). Restores the iterator's position in place when one is given."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def read_meta(self, step: int) -> dict[str, Any]:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(state, sharding) -> Any:
    """ShapeDtypeStructs with the given sharding, to restore `state`-shaped trees into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
