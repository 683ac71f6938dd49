"""The one training loop: every method (supervised, GANomaly, VAE) trains through `fit`.

A method supplies pure step functions over a pytree state; the loop owns everything else:
jit with shardings and donation, the data-parallel mesh, Grain iterators, Orbax checkpoints
(latest + best, exact resume), early stopping, NaN guard, progress bar, history.csv and
TensorBoard events.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxfundus.config import RunConfig, input_workers
from jaxfundus.data.augment import prepare_batch
from jaxfundus.data.pipeline import eval_batches, steps_per_epoch, train_batches
from jaxfundus.runs import CHECKPOINTS, TENSORBOARD, write_history
from jaxfundus.train.checkpoint import RunCheckpoints, abstract_like
from jaxfundus.train.mesh import DataParallel


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class Method(Protocol):
    """What a method supplies to the loop. Steps are pure functions, jitted by the loop.

    Batches hold `image` float32[B,S,S,3], `target` (int[B] or float[B,D]), `mask` bool[B]
    (False on padding rows) and, in training when the method weights its loss, `weight`
    (float32[B] or float32[B,D], from `example_weights`). `eval_step` returns per-example arrays
    with leading dim B. The state is a pytree (a flax.struct dataclass per method).
    """

    normalization: str
    selection_metric: str
    # Adds fields to each training example on the host (see data.pipeline.train_batches).
    example_transform: Callable[[np.ndarray, np.random.Generator], dict] | None

    def init_state(self, seed: int) -> Any: ...
    # Optional: `start_from(state, sharding) -> state` replaces parts of a fresh state with
    # what the run starts from (pretrained weights) outside the jitted initialiser, placed with
    # `sharding`. The loop calls it when it does not resume (a checkpoint holds the whole state).
    def example_weights(self, train_targets: np.ndarray) -> np.ndarray | None: ...
    def train_step(self, state: Any, batch: dict[str, jax.Array]) -> tuple[Any, dict]: ...
    def eval_step(self, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]: ...
    def validation_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict: ...


@dataclasses.dataclass(frozen=True)
class SplitData:
    """The images of one split: data-source `indices` and one `targets` row per image."""

    source: Any
    indices: np.ndarray
    targets: np.ndarray


@dataclasses.dataclass
class LoopState:
    """The loop's bookkeeping, saved as JSON with every checkpoint.

    `sums` holds the running sums of this epoch's step metrics (and `_steps`, their count), so a
    run resumed mid-epoch reports the same epoch means. `best_rank` counts new bests: the
    checkpoint policy keeps the highest-ranked checkpoint as the best.
    """

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    step_in_epoch: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = -1
    best_step: int | None = None
    best_rank: int = 0
    epochs_without_improvement: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> LoopState:
        return cls(**record)

    def early_stopped(self, patience: int) -> bool:
        return patience > 0 and self.epochs_without_improvement >= patience

    def end_epoch(self, row: dict[str, float], score: float) -> bool:
        """Record a finished epoch (its history `row` and validation `score`, higher is
        better); True when it is the new best.

        The first of tied scores stays the best. A NaN score is never the best, except for
        the first epoch (some epoch must be kept), which the next finite score replaces.
        """
        self.epoch, self.step_in_epoch, self.sums = self.epoch + 1, 0, {}
        self.history = [*self.history, row]
        improved = self.best_value is None or (math.isfinite(score) and (
            not math.isfinite(self.best_value) or score > self.best_value))
        if improved:
            self.best_value, self.best_epoch, self.best_step = score, self.epoch, self.step
            self.best_rank += 1
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return improved


@dataclasses.dataclass
class FitResult:
    state: Any
    history: list[dict[str, float]]
    best_epoch: int
    resumed_from_step: int | None


class Trainer:
    """Binds a method to a config and the mesh; jits its steps once for every split and fold."""

    def __init__(self, method: Method, config: RunConfig, parallel: DataParallel) -> None:
        parallel.check_batch(config.batch_size)
        self.method = method
        self.config = config
        self.parallel = parallel
        self.host_fetches = 0  # device-to-host fetches of step metrics (see _fetch)
        augment_seed = config.seed if config.augment else None
        self.train_step = jax.jit(
            lambda state, batch: method.train_step(
                state, prepare_batch(batch, method.normalization, augment_seed)),
            in_shardings=(parallel.replicated, parallel.batch),
            out_shardings=(parallel.replicated, parallel.replicated), donate_argnums=0)
        self._eval_step = jax.jit(
            lambda state, batch: method.eval_step(
                state, prepare_batch(batch, method.normalization, None)),
            in_shardings=(parallel.replicated, parallel.batch), out_shardings=parallel.batch)
        # Created inside jit with a replicated out-sharding, so every process builds the same
        # state without transfers; no fold-dependent input, so folds reuse one compilation.
        self._init_state = jax.jit(lambda: method.init_state(config.seed),
                                   out_shardings=parallel.replicated)

    def fit(self, train: SplitData, val: SplitData, run_dir: Path,
            log: Callable[[str], None] = print) -> FitResult:
        """Train on `train`, select on `val`, resuming from `run_dir`'s latest checkpoint."""
        config, parallel = self.config, self.parallel
        n_steps = steps_per_epoch(len(train.indices), config.batch_size)
        state = self.init_state()
        iterator = train_batches(
            train.source, train.indices, train.targets, image_size=config.image_size,
            global_batch=config.batch_size, epochs=config.epochs, seed=config.seed,
            weights=self.method.example_weights(train.targets),
            transform=self.method.example_transform, workers=input_workers(config.workers),
            process_index=parallel.process_index, process_count=parallel.process_count)
        checkpoints = RunCheckpoints(run_dir / CHECKPOINTS)
        loop, resumed_from = LoopState(), None
        resumed = checkpoints.restore_newest_readable(abstract_like(state, parallel.replicated),
                                                      iterator, log)
        if resumed is not None:
            resumed_from, state, meta = resumed
            loop = LoopState.from_json(meta)
            log(f"resuming from checkpoint at step {resumed_from} (epoch {loop.epoch + 1} "
                f"of {config.epochs})")
        else:
            state = self.start_state(state)
        writer = _TensorBoard(run_dir / TENSORBOARD) if parallel.is_primary else None
        try:
            while loop.epoch < config.epochs and not loop.early_stopped(config.patience):
                state = self._run_epoch(state, iterator, loop, n_steps, val, checkpoints,
                                        run_dir, writer, log)
            checkpoints.wait()
            if writer is not None:  # a run killed before it wrote its last epoch's row
                write_history(run_dir, loop.history)
            if loop.best_step is not None and loop.best_step != loop.step:
                state, _ = checkpoints.restore(loop.best_step,
                                               abstract_like(state, parallel.replicated))
        finally:
            if writer is not None:
                writer.close()
            checkpoints.close()
        return FitResult(state, loop.history, loop.best_epoch, resumed_from)

    def init_state(self) -> Any:
        """Fresh state, created replicated on every device of every process."""
        return self._init_state()

    def start_state(self, state: Any | None = None) -> Any:
        """The state a run starts training from: a fresh one (or `state`) with what the
        method's optional `start_from` puts in it (e.g. a pretrained backbone)."""
        state = self.init_state() if state is None else state
        start_from = getattr(self.method, "start_from", None)
        return state if start_from is None else start_from(state, self.parallel.replicated)

    def restore_best(self, run_dir: Path) -> Any:
        """The best checkpoint of a finished run (for re-evaluation and prediction)."""
        checkpoints = RunCheckpoints(run_dir / CHECKPOINTS)
        try:
            latest = checkpoints.latest_step()
            if latest is None:
                raise FileNotFoundError(f"no checkpoint in {run_dir / CHECKPOINTS}")
            best_step = LoopState.from_json(checkpoints.read_meta(latest)).best_step or latest
            template = jax.eval_shape(self._init_state)
            state, _ = checkpoints.restore(best_step,
                                           abstract_like(template, self.parallel.replicated))
            return state
        finally:
            checkpoints.close()

    def predict(self, state: Any, data: SplitData) -> dict[str, np.ndarray]:
        """Run `eval_step` over every image of `data` once; outputs in `data` order."""
        config, parallel = self.config, self.parallel
        chunks: list[dict[str, np.ndarray]] = []
        for batch in eval_batches(data.source, data.indices, data.targets,
                                  image_size=config.image_size, global_batch=config.batch_size,
                                  workers=input_workers(config.workers),
                                  process_index=parallel.process_index,
                                  process_count=parallel.process_count):
            device_batch = parallel.put_batch(_device_fields(batch))
            outputs = parallel.gather(self._eval_step(state, device_batch))
            mask = parallel.gather({"mask": device_batch["mask"]})["mask"]
            chunks.append({k: v[mask] for k, v in outputs.items()})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def _run_epoch(self, state, iterator, loop: LoopState, n_steps, val, checkpoints, run_dir,
                   writer, log):
        """One epoch (or its rest, after a mid-epoch resume); updates `loop` in place.

        Steps are dispatched without waiting on the host: step metrics are summed on the
        device and fetched every `log_every_steps`, before each checkpoint and at the epoch's
        end, where the NaN guard checks them. The next batches are put on the devices while a
        step runs, but never past a checkpoint, so a saved iterator position is exact.
        """
        config, parallel, method = self.config, self.parallel, self.method
        start = time.perf_counter()
        first = loop.step_in_epoch
        sums = dict(loop.sums)  # host sums up to the last fetch (from a mid-epoch checkpoint)
        device_sums, fetched_steps, checked_step = None, 0, loop.step
        batches = _DevicePrefetch(iterator, lambda b: parallel.put_batch(_device_fields(b)))
        every, log_every = config.checkpoint_every_steps, config.log_every_steps
        bar = tqdm(range(first, n_steps), total=n_steps, initial=first,
                   desc=f"epoch {loop.epoch + 1}/{config.epochs}", leave=False,
                   dynamic_ncols=True,
                   disable=True if parallel.process_index else None)  # None: off without a TTY
        with jax.transfer_guard_device_to_host("disallow"):  # no hidden per-step syncs
            for step_in_epoch in bar:
                to_boundary = n_steps - step_in_epoch
                if every:
                    to_boundary = min(to_boundary, every - loop.step % every)
                state, metrics = self.train_step(state, batches.next(ahead=to_boundary - 1))
                device_sums = metrics if device_sums is None else _add(device_sums, metrics)
                loop.step += 1
                checkpoint_due = bool(every) and loop.step % every == 0 \
                    and step_in_epoch + 1 < n_steps
                if (step_in_epoch + 1 == n_steps or checkpoint_due
                        or (log_every and loop.step % log_every == 0)):
                    window = self._fetch(device_sums)
                    _check_finite(window, checked_step + 1, loop.step, checkpoints)
                    checked_step = loop.step
                    steps_done = step_in_epoch + 1 - first
                    current = _combine(sums, window, steps_done - fetched_steps)
                    sums, fetched_steps, device_sums = current, steps_done, None
                    bar.set_postfix({k: f"{v / sums['_steps']:.3f}" for k, v in sums.items()
                                     if k != "_steps"})
                if checkpoint_due:
                    loop.step_in_epoch, loop.sums = step_in_epoch + 1, sums
                    with jax.transfer_guard("allow"):
                        checkpoints.save(loop.step, state, iterator, loop.to_json(),
                                         best_rank=None)
        bar.close()
        row = {"epoch": loop.epoch + 1}
        row.update({f"train_{k}": v / sums["_steps"] for k, v in sums.items() if k != "_steps"})
        val_metrics = method.validation_metrics(self.predict(state, val), val.targets)
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        row["seconds"] = round(time.perf_counter() - start, 2)
        improved = loop.end_epoch(row, val_metrics[method.selection_metric])
        checkpoints.save(loop.step, state, iterator, loop.to_json(),
                         best_rank=loop.best_rank if improved else None)
        if writer is not None:
            write_history(run_dir, loop.history)
            writer.add(row)
            log("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in row.items()))
        return state

    def _fetch(self, device_sums: dict[str, jax.Array]) -> dict[str, float]:
        """The summed step metrics since the last fetch, on the host (counted in
        `host_fetches`: the only device-to-host transfers of the training steps)."""
        self.host_fetches += 1
        return {k: float(v) for k, v in jax.device_get(device_sums).items()}


class _DevicePrefetch:
    """Batches from a host iterator, put on the devices up to `depth` steps ahead."""

    def __init__(self, iterator, put: Callable, depth: int = 2) -> None:
        self._iterator, self._put, self._depth = iterator, put, depth
        self._queue: collections.deque = collections.deque()

    def next(self, ahead: int) -> dict[str, jax.Array]:
        """The next batch; at most `ahead` more are read from the iterator after it."""
        while len(self._queue) < 1 + min(ahead, self._depth - 1):
            self._queue.append(self._put(next(self._iterator)))
        return self._queue.popleft()


_add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


def _combine(sums: dict[str, float], window: dict[str, float], steps: int) -> dict[str, float]:
    """Host sums plus a fetched window of `steps` steps' summed metrics."""
    combined = dict(sums)
    for name, value in window.items():
        combined[name] = combined.get(name, 0.0) + value
    combined["_steps"] = combined.get("_steps", 0.0) + steps
    return combined


def _device_fields(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch fields the steps read (the pipeline's `row` stays on the host)."""
    return {k: v for k, v in batch.items() if k != "row"}


def _check_finite(window: dict[str, float], first_step: int, last_step: int,
                  checkpoints: RunCheckpoints) -> None:
    """TrainingDiverged when a metric summed over steps first_step..last_step is NaN/Inf."""
    bad = [k for k, v in window.items() if not math.isfinite(v)]
    if bad:
        checkpoints.wait()
        kept = checkpoints.latest_step()
        kept_text = "no checkpoint was saved yet" if kept is None else (
            f"the last good checkpoint (step {kept}) is kept")
        steps = f"step {last_step}" if first_step == last_step else (
            f"steps {first_step}-{last_step}")
        raise TrainingDiverged(
            f"{', '.join(bad)} became non-finite in {steps}; training stopped and "
            f"{kept_text}. Lower the learning rate and run again.")


class _TensorBoard:
    """Per-epoch scalars as TensorBoard event files (tensorboardX: no TensorFlow needed)."""

    def __init__(self, directory: Path) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(directory))

    def add(self, row: dict[str, float]) -> None:
        for name, value in row.items():
            if name != "epoch" and isinstance(value, float):
                self._writer.add_scalar(name, value, row["epoch"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
