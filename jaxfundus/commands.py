"""What the invoke tasks do, as plain functions (tested directly; tasks.py only parses flags)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from jaxfundus.config import (
    ConfigError,
    RunConfig,
    default_preset,
    expand_task,
    load_task,
    preset_model,
    resolve_config,
    task_names,
)

Log = Callable[[str], None]
# RunConfig fields that change how a trained run is scored, not what was trained (eval --set).
EVALUATION_SETTINGS = ("threshold", "threshold_criterion", "batch_size", "workers", "data_dir")


def data_headline(data_dir: str | None) -> str:
    if data_dir is None:
        from jaxfundus.paths import cache_dir

        return f"SYNTHETIC default data (procedural generator, cached in {cache_dir()})"
    return f"prepared data at {data_dir}"


def matrix(task: str | None, model: str | None, all_tasks: bool,
           preset: str | None = None) -> list[tuple[str, str]]:
    """(task, model) pairs to run: one task (or group) and its models, or the whole matrix.

    With a preset, a task's listed models become the preset's substitutes (cpu: resnet50 runs
    as resnet18) unless --model names one explicitly.
    """
    if all_tasks:
        if task or model:
            raise ConfigError("--all runs the whole matrix; leave out --task and --model")
        names = task_names()
    elif task:
        names = expand_task(task)
    else:
        raise ConfigError("say which task: --task=NAME (or --all); tasks: "
                          + ", ".join(task_names()))
    pairs = []
    for name in names:
        spec = load_task(name)
        models = [model] if model else [preset_model(preset, m) if preset else m
                                         for m in spec.models]
        pairs.extend((name, m) for m in dict.fromkeys(models))
    return pairs


def train(*, task: str | None = None, model: str | None = None, all_tasks: bool = False,
          preset: str | None = None, retrain: bool = False, log: Log = print,
          **overrides) -> list[dict]:
    """Train each (task, model) pair; returns their summary.json contents."""
    from jaxfundus.compile_cache import enable_compilation_cache
    from jaxfundus.data.datasets import open_dataset
    from jaxfundus.experiment import train_task
    from jaxfundus.methods import check_fits
    from jaxfundus.train.mesh import DataParallel

    preset = preset or default_preset()
    pairs = matrix(task, model, all_tasks, preset)
    configs = [resolve_config(t, m, preset, **overrides) for t, m in pairs]
    for config in configs:  # before any data is prepared or trained
        check_fits(load_task(config.task), config.model)
    log(f"jaxfundus train: preset '{preset}'; data: {data_headline(configs[0].data_dir)}")
    substituted = sorted({(m, preset_model(preset, m)) for t, _ in pairs
                          for m in load_task(t).models if preset_model(preset, m) != m})
    for listed, used in substituted if not model else ():
        log(f"preset '{preset}': {listed} is trained as {used} (pass --model={listed} or "
            f"--preset=paper for the full model)")
    enable_compilation_cache()
    parallel = DataParallel()
    log(parallel.describe())
    summaries = []
    datasets: dict[int, object] = {}
    for config in configs:
        if config.image_size not in datasets:
            datasets[config.image_size] = open_dataset(config.data_dir, config.image_size, log)
            log(datasets[config.image_size].headline())
        log(_describe_run(config))
        summary = train_task(config, datasets[config.image_size], parallel=parallel,
                             retrain=retrain, log=log)
        if parallel.is_primary:
            log(_describe_summary(summary))
        summaries.append(summary)
    return summaries


def _describe_run(config: RunConfig) -> str:
    return (f"== {config.task} / {config.model}: {config.image_size} px, batch "
            f"{config.batch_size}, {config.epochs} epochs, lr {config.learning_rate}, "
            f"seed {config.seed}, {config.dtype}")


def _describe_summary(summary: dict) -> str:
    parts = [f"{name} {v['mean']:.3f} ± {v['std']:.3f}" for name, v in summary["metrics"].items()]
    return (f"== {summary['task']} / {summary['model']}: {summary['folds_done']}/"
            f"{summary['folds_expected']} folds; " + ", ".join(parts))


def prepare_data(*, source: str, data_dir: str, image_size: int = 256, strict: bool = False,
                 log: Log = print):
    """Build the TFDS dataset from a TOP-layout directory and print the summary of bad rows."""
    from jaxfundus.data.tfds_dataset import build_dataset

    result = build_dataset(Path(source), Path(data_dir), image_size=image_size, strict=strict)
    log(f"prepared {result.n_kept} of {result.n_rows} rows at {image_size} px into "
        f"{result.dataset_dir}")
    if result.bad_rows:
        log(f"skipped {len(result.bad_rows)} bad rows ({result.n_missing} image files missing); "
            f"listed in {result.report_path}:")
        for bad in result.bad_rows[:20]:
            log(f"  row {bad.row}: {bad.filename}: {bad.reason}")
        if len(result.bad_rows) > 20:
            log(f"  ... and {len(result.bad_rows) - 20} more")
    return result


def eda(*, source: str | None = None, out: str | None = None, workdir: str = "runs",
        log: Log = print) -> Path:
    """EDA figures and summary for a TOP-layout directory (default: the synthetic data)."""
    from jaxfundus.data.datasets import default_source
    from jaxfundus.data.eda import write_eda

    log(f"jaxfundus eda: data: {data_headline(source) if source else data_headline(None)}")
    source_dir = Path(source) if source else default_source(log)
    summary = write_eda(source_dir, Path(out) if out else Path(workdir) / "eda")
    log(f"wrote {summary.parent} ({', '.join(sorted(p.name for p in summary.parent.iterdir()))})")
    return summary


def evaluate(*, task: str | None = None, model: str | None = None, all_tasks: bool = False,
             workdir: str = "runs", log: Log = print, **overrides) -> list:
    """Re-evaluate trained runs' best checkpoints on their test splits (--all: every run, then
    the report). Runs of the matrix that were never trained are listed as such.

    `overrides` (EVALUATION_SETTINGS, e.g. threshold=0.4) replace the saved configuration's
    values; None leaves a value as trained.
    """
    unknown = sorted(set(overrides) - set(EVALUATION_SETTINGS))
    if unknown:
        raise ConfigError(f"eval cannot change {', '.join(unknown)}; it can change: "
                          + ", ".join(EVALUATION_SETTINGS))
    from jaxfundus.compile_cache import enable_compilation_cache
    from jaxfundus.data.datasets import open_dataset
    from jaxfundus.experiment import evaluate_task
    from jaxfundus.runs import saved_config
    from jaxfundus.train.mesh import DataParallel

    pairs = matrix(task, model, all_tasks)
    enable_compilation_cache()
    parallel = DataParallel()
    summaries, not_trained, datasets = [], [], {}
    for task_name, model_name in pairs:
        config = saved_config(workdir, task_name, model_name, **overrides)
        if config is None:
            not_trained.append(f"{task_name}/{model_name}")
            continue
        key = (config.data_dir, config.image_size)
        if key not in datasets:
            log(f"data: {data_headline(config.data_dir)}")
            datasets[key] = open_dataset(config.data_dir, config.image_size, log)
        log(f"== evaluating {task_name} / {model_name}")
        summaries.append(evaluate_task(config, datasets[key], parallel=parallel, log=log))
    if not_trained:
        log(f"not trained ({len(not_trained)}): {', '.join(not_trained)}")
    if all_tasks:
        report(workdir=workdir, log=log)
    elif not summaries:
        raise ConfigError(f"nothing to evaluate: {', '.join(not_trained)} not trained in {workdir}")
    return summaries


def report(*, workdir: str = "runs", log: Log = print) -> Path:
    """Write WORKDIR/report/{summary.csv, summary.md, index.html}."""
    from jaxfundus.evaluate.report import write_report

    path = write_report(Path(workdir))
    log(f"report: {path}")
    return path


def predict(*, task: str, model: str | None = None, image: str | None = None,
            folder: str | None = None, as_json: bool = False, workdir: str = "runs",
            out: str | None = None, log: Log = print, warn: Log = print) -> int:
    """Score one image or a folder; returns the number of files that could not be scored.

    Anomaly detectors also write an anomaly-map PNG per image into `out` (default
    WORKDIR/<task>/<model>/anomaly-maps); the output names the file."""
    from jaxfundus.compile_cache import enable_compilation_cache
    from jaxfundus.predict import Predictor, image_files, predict_files

    files = image_files(image, folder)
    enable_compilation_cache()
    predictor = Predictor(workdir, task, model, out=out)
    failures = 0
    for prediction, error in predict_files(predictor, files):
        if error:
            failures += 1
            warn(f"error: {error}")
        else:
            log(prediction.to_json() if as_json else prediction.to_text())
    return failures


def bench(*, model: str = "resnet50", image_size: int = 128, batch_size: int = 16,
          steps: int = 10, dtype: str = "float32", pipeline: bool = False, workers: int = 0,
          compare: bool = False, as_json: bool = False, data_dir: str | None = None,
          log: Log = print) -> dict:
    """Benchmark the training step (or the input pipeline); --compare adds the PyTorch step."""
    from jaxfundus import bench as benchmarks

    if pipeline:
        result = benchmarks.bench_pipeline(image_size, batch_size, workers=workers,
                                           data_dir=data_dir, log=log if not as_json else print)
        log(json.dumps(result) if as_json else
            f"pipeline: {result['img_per_s']:.1f} images/s ({image_size} px from stored "
            f"{result['stored_size']} px, batch {batch_size}, {workers} worker processes)")
        return result
    result = benchmarks.bench_train_step(model, image_size, batch_size, steps=steps, dtype=dtype)
    if compare and model in benchmarks.TORCH_MODELS:
        reference = benchmarks.bench_torch_reference(model, image_size, batch_size, steps)
        result["torch_img_per_s"] = reference["img_per_s"] if reference else None
        result["ratio_vs_torch"] = (result["img_per_s"] / reference["img_per_s"]
                                    if reference else None)
    if as_json:
        log(json.dumps(result))
        return result
    log(f"{model} train step, {image_size} px, batch {batch_size}, {dtype}, {result['devices']}")
    log(f"  {result['img_per_s']:.1f} images/s, step {result['step_s'] * 1e3:.1f} ms, "
        f"compile {result['compile_s']:.1f} s")
    log(f"  {result['flops_per_step'] / 1e9:.1f} GFLOP/step, "
        f"{result['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved, matmul peak "
        f"{result['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, MFU {result['mfu']:.1%}")
    log(f"  peak resident memory {result['peak_rss_gib']:.2f} GiB")
    if "ratio_vs_torch" in result:
        if result["ratio_vs_torch"] is None:
            log("  PyTorch reference unavailable (pip install torch==2.13.0 to compare)")
        else:
            log(f"  PyTorch eager reference {result['torch_img_per_s']:.1f} images/s -> "
                f"ratio {result['ratio_vs_torch']:.2f}x")
    return result
