"""Entry points: `invoke train --task=five-rare`, `invoke data ...`, `invoke eval --all`, ...

Thin layer: parse flags, call jaxfundus.commands, turn known errors into one-line messages.
"""

from __future__ import annotations

import functools
import sys

from invoke import Exit, task


def _friendly_errors(func):
    """Known user-facing errors -> one line on stderr and exit code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from jaxfundus.errors import USER_ERRORS

        try:
            return func(*args, **kwargs)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper


def _int(value):
    return None if value is None else int(value)


def _float(value):
    return None if value is None else float(value)


@task(help={
    "task": "task or group name (see experiments/), e.g. five-rare, rare-vs-normal",
    "all": "train the whole task matrix",
    "model": "one of the task's models (default: all of them)",
    "preset": "smoke | cpu | paper (default: cpu without an accelerator, paper with one)",
    "data-dir": "prepared TFDS data (invoke data); default: the synthetic dataset",
    "workdir": "where runs are written (default runs)",
    "retrain": "train again even when the run has finished",
    "threshold": "anomaly tasks: a manual decision threshold on the normalised score",
    "anomaly-test-set": "anomaly tasks: patients | study-imbalanced | study-reduced",
    "coordinator": "multi-process: coordinator address host:port (jax.distributed)",
})
@_friendly_errors
def train(c, task=None, all_=False, model=None, preset=None, epochs=None, image_size=None,
          batch_size=None, learning_rate=None, seed=None, data_dir=None, workdir=None,
          dtype=None, workers=None, retrain=False, threshold=None, anomaly_test_set=None,
          coordinator=None, num_processes=None, process_id=None):
    """Train a task of the matrix (all its models and folds), or --all of it."""
    if coordinator:
        from jaxfundus.train.mesh import initialize_distributed

        initialize_distributed(coordinator, int(num_processes), int(process_id))
    from jaxfundus import commands

    commands.train(task=task, model=model, all_tasks=all_, preset=preset, retrain=retrain,
                   epochs=_int(epochs), image_size=_int(image_size),
                   batch_size=_int(batch_size), learning_rate=_float(learning_rate),
                   seed=_int(seed), data_dir=data_dir, workdir=workdir, dtype=dtype,
                   workers=_int(workers), threshold=_float(threshold),
                   anomaly_test_set=anomaly_test_set)


@task(help={
    "source": "a TOP-layout directory (data.csv + img/)",
    "data-dir": "where the TFDS dataset is written",
    "image-size": "stored square size in px (32, 64, 128, 256, 512, 1024)",
    "strict": "refuse the whole build if any row is bad",
})
@_friendly_errors
def data(c, source, data_dir, image_size=256, strict=False):
    """Prepare the TFDS dataset from TOP data (bad rows are skipped and reported)."""
    from jaxfundus import commands

    commands.prepare_data(source=source, data_dir=data_dir, image_size=int(image_size),
                          strict=strict)


@task(help={"source": "a TOP-layout directory (default: the synthetic data)",
            "out": "output folder (default WORKDIR/eda)", "workdir": "default runs"})
@_friendly_errors
def eda(c, source=None, out=None, workdir="runs"):
    """The study's EDA figures (age/sex, disease counts, co-occurrence, samples) + summary.md."""
    from jaxfundus import commands

    commands.eda(source=source, out=out, workdir=workdir)


@task(help={
    "task": "task or group to re-evaluate", "all": "every run of the matrix, then the report",
    "model": "one model of the task", "workdir": "default runs",
    "threshold": "anomaly tasks: use this manual threshold (normalised score) instead",
})
@_friendly_errors
def eval(c, task=None, all_=False, model=None, workdir="runs", threshold=None):  # noqa: A001
    """Re-evaluate trained runs' best checkpoints on their test splits (--all writes the report)."""
    from jaxfundus import commands

    commands.evaluate(task=task, model=model, all_tasks=all_, workdir=workdir,
                      threshold=_float(threshold))


@task(help={"workdir": "default runs"})
@_friendly_errors
def report(c, workdir="runs"):
    """Write WORKDIR/report/{summary.csv, summary.md, index.html} from the trained runs."""
    from jaxfundus import commands

    commands.report(workdir=workdir)


@task(help={"task": "a task with two or more trained models", "workdir": "default runs",
            "json": "one JSON object per pair of models"})
@_friendly_errors
def compare(c, task, workdir="runs", json=False):
    """Paired AUROC difference of a task's trained models on the same test images."""
    from jaxfundus import commands

    commands.compare(task=task, workdir=workdir, as_json=json)


@task(help={
    "task": "the trained task", "model": "its model (default: the task's first)",
    "image": "one photograph", "folder": "score every file in a folder",
    "json": "one JSON object per image", "workdir": "default runs",
    "explain": "also write Grad-CAM overlays (photograph + heat map) per image",
    "out": "folder for the overlays (default WORKDIR/<task>/<model>/explanations)",
})
@_friendly_errors
def predict(c, task, model=None, image=None, folder=None, json=False, explain=False, out=None,
            workdir="runs"):
    """Class probabilities (or anomaly score and decision) for new photographs."""
    from jaxfundus import commands

    failures = commands.predict(task=task, model=model, image=image, folder=folder,
                                as_json=json, explain=explain, out=out, workdir=workdir,
                                warn=lambda line: print(line, file=sys.stderr))
    if failures:
        raise Exit(code=1)


@task(help={
    "model": "resnet50 | resnet18 | inception-v3 | simple-cnn | ganomaly | vae",
    "image-size": "square input size in px", "batch-size": "global batch",
    "steps": "timed steps (after compilation and warm-up)", "dtype": "float32 | bfloat16",
    "pipeline": "benchmark the Grain input pipeline instead of the step",
    "workers": "pipeline worker processes",
    "compare": "also time the PyTorch step (resnet50, ganomaly)",
    "json": "one JSON line", "data-dir": "pipeline data (default: the synthetic dataset)",
})
@_friendly_errors
def bench(c, model="resnet50", image_size=128, batch_size=16, steps=10, dtype="float32",
          pipeline=False, workers=0, compare=False, json=False, data_dir=None):
    """Images/s, step and compile time, FLOPs and MFU of the real training step."""
    from jaxfundus import commands

    commands.bench(model=model, image_size=int(image_size), batch_size=int(batch_size),
                   steps=int(steps), dtype=dtype, pipeline=pipeline, workers=int(workers),
                   compare=compare, as_json=json, data_dir=data_dir)
