"""Entry points: `invoke train --task=five-rare`, `invoke data ...`, `invoke eval --all`, ...

Thin layer: parse flags, call jaxfundus.commands, turn known errors into one-line messages.
"""

from __future__ import annotations

import functools
import sys

from invoke import Exit, task


def _entry_point(func):
    """Process setup for a task, then known user-facing errors -> one line on stderr and exit
    code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        # First, before anything imports jax: the allocator tuning must precede jax's threads.
        from jaxfundus.host_memory import retain_freed_memory

        retain_freed_memory()
        from jaxfundus.errors import USER_ERRORS

        try:
            return func(*args, **kwargs)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper


def _overrides(settings, allowed=None, **flags):
    """RunConfig overrides from `--set key=value` and the explicit flags, which are shorthands
    for it: both are parsed, typed and checked by jaxfundus.config.parse_settings."""
    from jaxfundus.config import parse_settings

    shorthands = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return parse_settings([*shorthands, *(settings or ())], allowed)


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
    "init": "imagenet: start the backbone from ImageNet weights (make them once with `invoke "
            "weights --model=MODEL`); PATH: from that weights file; scratch: a random start",
    "set": "KEY=VALUE for any run option (repeatable), e.g. --set epochs=3 --set augment=no",
}, iterable=["set_"])
@_entry_point
def train(c, task=None, all_=False, model=None, preset=None, epochs=None, image_size=None,
          batch_size=None, learning_rate=None, seed=None, data_dir=None, workdir=None,
          dtype=None, workers=None, retrain=False, threshold=None, anomaly_test_set=None,
          init=None, coordinator=None, num_processes=None, process_id=None, set_=None):
    """Train a task of the matrix (all its models and folds), or --all of it."""
    overrides = _overrides(set_, epochs=epochs, image_size=image_size, batch_size=batch_size,
                           learning_rate=learning_rate, seed=seed, data_dir=data_dir,
                           workdir=workdir, dtype=dtype, workers=workers, threshold=threshold,
                           anomaly_test_set=anomaly_test_set, init=init)
    if coordinator:
        from jaxfundus.train.mesh import initialize_distributed

        initialize_distributed(coordinator, int(num_processes), int(process_id))
    from jaxfundus import commands

    commands.train(task=task, model=model, all_tasks=all_, preset=preset, retrain=retrain,
                   **overrides)


@task(help={
    "source": "a TOP-layout directory (data.csv + img/)",
    "data-dir": "where the TFDS dataset is written",
    "image-size": "stored square size in px (32, 64, 128, 256, 512, 1024)",
    "strict": "refuse the whole build if any row is bad",
    "crop": "fov: crop colour fundus photographs to their field of view before the letterbox "
            "(ultra-widefield images are detected and kept whole); none (default): whole images",
})
@_entry_point
def data(c, source, data_dir, image_size=256, strict=False, crop="none"):
    """Prepare the TFDS dataset from TOP data (bad rows are skipped and reported)."""
    from jaxfundus import commands

    commands.prepare_data(source=source, data_dir=data_dir, image_size=int(image_size),
                          strict=strict, crop=crop)


@task(help={
    "out": "the directory to write (data.csv, img/, masks/); a previous synthetic one is replaced",
    "seed": "0 (default) is the embedded default data; any other seed an independent replicate",
    "scale": "fraction of TOP's 13,047 images (default 0.1: about 1,400)",
    "style": "optos (ultra-widefield pseudo-colour, default) | colour (45-degree photograph)",
    "width": "image width in px (default 512)", "height": "image height in px (default 384)",
    "severity": "multiplies every lesion's severity (default 1; 0 draws none)",
    "min-images-per-class": "each single-label group keeps at least this many images (40)",
})
@_entry_point
def synthesize(c, out, seed=0, scale=0.1, style="optos", width=512, height=384, severity=1.0,
               min_images_per_class=40):
    """Write a synthetic TOP-layout dataset from the fundus generator (then `invoke data`)."""
    from jaxfundus import commands

    commands.synthesize(out=out, seed=int(seed), scale=float(scale), style=style,
                        width=int(width), height=int(height), severity=float(severity),
                        min_images_per_class=int(min_images_per_class))


@task(help={"source": "a TOP-layout directory (default: the synthetic data)",
            "out": "output folder (default WORKDIR/eda)", "workdir": "default runs"})
@_entry_point
def eda(c, source=None, out=None, workdir="runs"):
    """The study's EDA figures (age/sex, disease counts, co-occurrence, samples) + summary.md."""
    from jaxfundus import commands

    commands.eda(source=source, out=out, workdir=workdir)


@task(help={
    "task": "task or group to re-evaluate", "all": "every run of the matrix, then the report",
    "model": "one model of the task", "workdir": "default runs",
    "threshold": "anomaly tasks: use this manual threshold (normalised score) instead",
    "set": "KEY=VALUE (repeatable) for threshold, threshold_criterion, batch_size, workers, "
           "data_dir",
}, iterable=["set_"])
@_entry_point
def eval(c, task=None, all_=False, model=None, workdir="runs", threshold=None,  # noqa: A001
         set_=None):
    """Re-evaluate trained runs' best checkpoints on their test splits (--all writes the report)."""
    from jaxfundus import commands

    overrides = _overrides(set_, commands.EVALUATION_SETTINGS, threshold=threshold)
    commands.evaluate(task=task, model=model, all_tasks=all_, workdir=workdir, **overrides)


@task(help={"workdir": "default runs"})
@_entry_point
def report(c, workdir="runs"):
    """Write WORKDIR/report/{summary.csv, summary.md, index.html} from the trained runs."""
    from jaxfundus import commands

    commands.report(workdir=workdir)


@task(help={"task": "a task with two or more trained models", "workdir": "default runs",
            "json": "one JSON object per pair of models"})
@_entry_point
def compare(c, task, workdir="runs", json=False):
    """Paired AUROC difference of a task's trained models on the same test images."""
    from jaxfundus import commands

    commands.compare(task=task, workdir=workdir, as_json=json)


@task(help={
    "task": "the trained task", "model": "its model (default: the task's first)",
    "image": "one photograph", "folder": "score every file in a folder",
    "json": "one JSON object per image", "workdir": "default runs",
    "explain": "also write Grad-CAM overlays (photograph + heat map) per image",
    "out": "folder for the overlays (default WORKDIR/<task>/<model>/explanations) and, for "
           "anomaly tasks, the anomaly-map PNGs (default WORKDIR/<task>/<model>/anomaly-maps)",
})
@_entry_point
def predict(c, task, model=None, image=None, folder=None, json=False, explain=False, out=None,
            workdir="runs"):
    """Class probabilities (or anomaly score, decision and anomaly map) for new photographs."""
    from jaxfundus import commands

    failures = commands.predict(task=task, model=model, image=image, folder=folder,
                                as_json=json, explain=explain, out=out, workdir=workdir,
                                warn=lambda line: print(line, file=sys.stderr))
    if failures:
        raise Exit(code=1)


@task(help={
    "model": "resnet50 | resnet18 | inception-v3 | simple-cnn | ganomaly | vae | draem",
    "image-size": "square input size in px", "batch-size": "global batch",
    "steps": "timed steps (after compilation and warm-up)", "dtype": "float32 | bfloat16",
    "pipeline": "benchmark the Grain input pipeline instead of the step",
    "workers": "pipeline worker processes",
    "compare": "also time the PyTorch step (resnet50, ganomaly)",
    "json": "one JSON line", "data-dir": "pipeline data (default: the synthetic dataset)",
})
@_entry_point
def bench(c, model="resnet50", image_size=128, batch_size=16, steps=10, dtype="float32",
          pipeline=False, workers=0, compare=False, json=False, data_dir=None):
    """Images/s, step and compile time, FLOPs and MFU of the real training step."""
    from jaxfundus import commands

    commands.bench(model=model, image_size=int(image_size), batch_size=int(batch_size),
                   steps=int(steps), dtype=dtype, pipeline=pipeline, workers=int(workers),
                   compare=compare, as_json=json, data_dir=data_dir)


@task(help={
    "model": "resnet50 | inception-v3",
    "source": "a Keras weights file, legacy .h5 or Keras 3 .weights.h5 (default: Keras' ImageNet"
              " file in ~/.keras/models, downloaded by Keras if absent)",
    "check": "then compare the pooled features with Keras' own model (needs TensorFlow)",
})
@_entry_point
def weights(c, model, source=None, check=False):
    """Convert Keras' ImageNet weights into the project cache (--check: prove them equal)."""
    from jaxfundus.weights import convert_weights

    convert_weights(model, source=source, check=check)
