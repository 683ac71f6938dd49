"""Benchmarks of the real training step and the input pipeline (`invoke bench`).

The step timed is the Trainer's own jitted, sharded, donated step, so a figure measured here is
the figure training gets. Compile time, XLA cost-analysis FLOPs and the achieved FLOP/s against
a matmul peak measured in the same process are reported with it.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxfundus.config import load_task, resolve_config
from jaxfundus.methods import make_method, method_class
from jaxfundus.train.loop import Trainer
from jaxfundus.train.mesh import DataParallel

TORCH_REFERENCE = Path(__file__).resolve().parent.parent / "benchmarks" / "torch_reference.py"
TORCH_MODELS = ("resnet50", "ganomaly")  # the steps benchmarks/ has a PyTorch twin of


def matmul_peak_flops(dtype: str = "float32", n: int = 2048, repeats: int = 10) -> float:
    """Achieved FLOP/s of a jitted n x n matmul on the default device (the practical peak)."""
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def prepare_train_step(model: str, image_size: int, batch_size: int, *,
                       dtype: str = "float32") -> tuple:
    """Compile the Trainer's step for `model` on random data.

    Returns (run, info): run() executes one step (state is donated and carried inside) and
    blocks until it is done; info holds compile_s, flops_per_step and devices.
    """
    task = method_class(model).default_task
    spec = load_task(task)
    config = resolve_config(task, model, "cpu", image_size=image_size, batch_size=batch_size,
                            dtype=dtype)
    parallel = DataParallel()
    method = make_method(spec, config, steps_per_epoch=100)
    trainer = Trainer(method, config, parallel)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, len(spec.classes), batch_size).astype(np.int32)
    state = trainer.init_state()
    fields = {"image": rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8),
              "target": targets, "mask": np.ones(batch_size, bool),
              "example_id": np.stack([np.zeros(batch_size), np.arange(batch_size)], 1)
              .astype(np.int32)}
    weights = method.example_weights(targets)
    if weights is not None:
        fields["weight"] = weights
    if method.example_transform is not None:  # e.g. DRAEM's synthetic anomalies, made on the host
        made = [method.example_transform(image, np.random.default_rng([0, i]))
                for i, image in enumerate(fields["image"])]
        fields.update({name: np.stack([m[name] for m in made]) for name in made[0]})
    batch = parallel.put_batch(fields)
    start = time.perf_counter()
    compiled = trainer.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    carried = {"state": state}

    def run() -> None:
        carried["state"], metrics = compiled(carried["state"], batch)
        jax.block_until_ready(metrics)

    return run, {"compile_s": compile_s, "flops_per_step": flops,
                 "devices": parallel.describe()}


def bench_train_step(model: str, image_size: int, batch_size: int, *, steps: int = 10,
                     warmup: int = 2, dtype: str = "float32", peak_matmul_size: int = 2048) -> dict:
    """Time the training step of `model` on random data; returns the figures as a dict."""
    run, info = prepare_train_step(model, image_size, batch_size, dtype=dtype)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        run()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    flops = info["flops_per_step"]
    peak = matmul_peak_flops("bfloat16" if dtype == "bfloat16" else "float32",
                             n=peak_matmul_size)
    return {"model": model, "image_size": image_size, "batch_size": batch_size, "dtype": dtype,
            "devices": info["devices"], "img_per_s": batch_size / step_s, "step_s": step_s,
            "compile_s": info["compile_s"], "flops_per_step": flops,
            "achieved_flops_per_s": flops / step_s, "matmul_peak_flops_per_s": peak,
            "mfu": flops / step_s / peak, "peak_rss_gib": peak_rss_gib()}


def bench_pipeline(image_size: int, batch_size: int, *, steps: int = 50, workers: int = 0,
                   data_dir: str | None = None, log=print) -> dict:
    """Images/s of the Grain training pipeline (decode, resize, batch; augmentation and
    normalisation run on the device) in this process (workers=0: one worker) or in `workers`
    processes (-1: as many as `config.input_workers` picks). The batches timed are the uint8
    images the training step receives."""
    from jaxfundus.config import input_workers
    from jaxfundus.data.datasets import open_dataset
    from jaxfundus.data.pipeline import train_batches

    workers = input_workers(workers)
    dataset = open_dataset(data_dir, image_size, log)
    indices = np.arange(len(dataset.index))
    iterator = train_batches(dataset.source, indices, np.zeros(len(indices), np.int32),
                             image_size=image_size, global_batch=batch_size, epochs=100, seed=0,
                             workers=workers)
    first = next(iterator)  # start-up (and worker spawn) is not throughput
    images = 0
    start = time.perf_counter()
    for _ in range(steps):
        images += len(next(iterator)["image"])
    seconds = time.perf_counter() - start
    return {"pipeline": "grain train_batches", "image_size": image_size,
            "stored_size": dataset.stored_size, "batch_size": batch_size, "workers": workers,
            "batch_shape": list(first["image"].shape), "batch_dtype": str(first["image"].dtype),
            "images": images, "seconds": seconds, "img_per_s": images / seconds,
            "img_per_s_per_worker": images / seconds / max(workers, 1)}


def bench_torch_reference(model: str, image_size: int, batch_size: int,
                          steps: int = 10) -> dict | None:
    """The PyTorch eager step of `model` from benchmarks/, in a subprocess; None without torch."""
    result = subprocess.run([sys.executable, str(TORCH_REFERENCE), "--model", model, "--image-size",
                             str(image_size), "--batch-size", str(batch_size), "--steps",
                             str(steps)], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
