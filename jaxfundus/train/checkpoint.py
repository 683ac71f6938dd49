"""Orbax checkpoints of a run: train state, Grain iterator state and loop bookkeeping.

The latest checkpoint and the best (by validation metric) are kept; Orbax writes each step to
a temporary directory and renames it, so a crash or a full disk never leaves a half-written
checkpoint behind. Checkpoints are treated as files that can break: a newest checkpoint that
does not restore is set aside (moved, never deleted) and the next newest is used; what cannot
be read or written is reported in one line (CheckpointError) instead of a traceback.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

DAMAGED_DIR = "checkpoints-damaged"  # next to the checkpoints folder


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message names it and what to do."""


class RunCheckpoints:
    """Save/restore {state, data iterator, meta} under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).absolute()
        keep = policies.AnyPreservationPolicy([
            policies.LatestN(n=1),
            # Every save carries its rank (1, 2, ... for each new best, 0 otherwise); the
            # highest rank is the best.
            policies.BestN(get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=False),
        ])
        # `best_fn` makes Orbax write each step's metrics to disk, so the best checkpoint is
        # still known (and kept) after a resume; the policy above decides what is kept.
        # Saves write in the background while the next epoch trains; each save first waits
        # for the one before and checks the free space, so a full disk stops the run cleanly
        # at a save instead of failing inside a background write.
        options = ocp.CheckpointManagerOptions(preservation_policy=keep, best_fn=_rank,
                                               create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, data_iterator: grain.DatasetIterator, meta: dict[str, Any],
             best_rank: int | None) -> None:
        """Save; `best_rank` (1, 2, ... for each new best) marks a checkpoint as the new best.

        Raises CheckpointError when the write fails (e.g. the disk is full); the checkpoints
        saved before are untouched.
        """
        self._check_free_space(step, state)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(meta),
        )
        try:
            self._manager.save(step, args=args, metrics={"best_rank": best_rank or 0},
                               force=True)
        except (OSError, ValueError) as error:  # tensorstore reports write errors as ValueError
            raise self._save_error(step, error) from None

    def restore(self, step: int, abstract_state,
                data_iterator: grain.DatasetIterator | None = None):
        """-> (state, meta). Restores the iterator's position in place when one is given.

        Raises CheckpointError naming the step when it cannot be read.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001 - any failure to read means unreadable
            raise CheckpointError(f"the checkpoint at step {step} in {self.directory} is "
                                  f"unreadable: {_first_line(error)}") from None
        return restored["state"], restored["meta"]

    def restore_newest_readable(self, abstract_state, data_iterator: grain.DatasetIterator,
                                log: Callable[[str], None]):
        """(step, state, meta) of the newest checkpoint that restores, or None without any.

        Each newer one that fails is moved to ../checkpoints-damaged/ with a line in `log`.
        Raises CheckpointError when checkpoints exist but none restores.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            try:
                state, meta = self.restore(step, abstract_state, data_iterator)
            except CheckpointError as error:
                log(f"{error}; moved it to {self.set_aside(step)}")
                continue
            return step, state, meta
        if steps:
            raise CheckpointError(f"no checkpoint in {self.directory} restores (each was moved "
                                  f"to {self.directory.parent / DAMAGED_DIR}); pass --retrain to "
                                  "train this run from the start")
        return None

    def set_aside(self, step: int) -> Path:
        """Move a damaged step folder next to the checkpoints (kept, out of Orbax's sight)."""
        target = self.directory.parent / DAMAGED_DIR / f"step-{step}"
        suffix = 1
        while target.exists():
            target = target.with_name(f"step-{step}.{suffix}")
            suffix += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), target)
        self._manager.reload()
        return target

    def read_meta(self, step: int) -> dict[str, Any]:
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 - any failure to read means unreadable
            raise CheckpointError(f"the checkpoint at step {step} in {self.directory} is "
                                  f"unreadable: {_first_line(error)}") from None
        return restored["meta"]

    def wait(self) -> None:
        """Block until pending saves are written; CheckpointError if one failed."""
        try:
            self._manager.wait_until_finished()
        except (OSError, ValueError) as error:
            raise self._save_error(None, error) from None

    def close(self) -> None:
        self._manager.close()

    def _check_free_space(self, step: int, state) -> None:
        """CheckpointError before writing when the disk cannot hold another checkpoint: Orbax
        writes the new one next to the old ones, so a full disk is found before it fails."""
        self.wait()  # the previous save's bytes are on disk (or its failure is reported)
        newest = self.latest_step()
        on_disk = _directory_bytes(self.directory / str(newest)) if newest is not None else 0
        needed = int(max(on_disk, _tree_bytes(state)) * 1.1) + 2**18  # + metadata files
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise CheckpointError(
                f"could not save the checkpoint at step {step} in {self.directory}: not enough "
                f"space on its disk ({free / 2**20:.1f} MiB free, about {needed / 2**20:.1f} MiB "
                "needed); the checkpoints saved before are intact and the next run resumes from "
                "the newest")

    def _save_error(self, step: int | None, error: Exception) -> CheckpointError:
        which = "a checkpoint" if step is None else f"the checkpoint at step {step}"
        text = str(error)
        reason = (getattr(error, "strerror", None)
                  or ("No space left on device" if "os_error_code='28'" in text else None)
                  or _first_line(error))
        return CheckpointError(f"could not save {which} in {self.directory}: {reason}; the "
                               "checkpoints saved before are intact and the next run resumes "
                               "from the newest")


def _rank(metrics: dict[str, Any]) -> int:
    return metrics["best_rank"]


def abstract_like(state, sharding) -> Any:
    """ShapeDtypeStructs with the given sharding, to restore `state`-shaped trees into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def _tree_bytes(tree) -> int:
    return sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(tree))


def _directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
