"""What the invoke tasks do, as plain functions (tested directly; tasks.py only parses flags)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from jaxfundus.config import (
    ConfigError,
    RunConfig,
    check_config,
    default_preset,
    expand_task,
    load_task,
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


def matrix(task: str | None, model: str | None, all_tasks: bool) -> list[tuple[str, str]]:
    """(task, model) pairs to run: one task (or group) and its models, or the whole matrix.

    Every preset trains the models the task lists (the study's); --model picks one of them
    or another registered model (e.g. resnet18 for a quicker run).
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
        pairs.extend((name, m) for m in ([model] if model else spec.models))
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
    pairs = matrix(task, model, all_tasks)
    configs = [resolve_config(t, m, preset, **overrides) for t, m in pairs]
    for config in configs:  # before any data is prepared or trained
        check_fits(load_task(config.task), config.model)
    configs, init_notes = start_points(configs)
    log(f"jaxfundus train: preset '{preset}'; data: {data_headline(configs[0].data_dir)}")
    for note in init_notes:
        log(f"init: {note}")
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


def start_points(configs: list[RunConfig]) -> tuple[list[RunConfig], list[str]]:
    """Each run's `init` resolved ("imagenet-if-cached" -> "imagenet" or scratch) and its
    weights file checked, before any data is prepared or trained; returns the configs to
    train and one line per model saying how it starts (when there is something to say).

    Raises WeightsError (one line, naming the file and the first variable that does not fit)
    for a missing or mismatched weights file, ConfigError for settings that no longer fit.
    """
    from jaxfundus.models.initialization import check_init, resolve_init

    resolved, notes = [], {}
    for config in configs:
        init, note = resolve_init(config.model, config.init)
        config = check_config(dataclasses.replace(config, init=init))
        check_init(config.model, config.init)
        resolved.append(config)
        if note:
            notes.setdefault(config.model, note)
    return resolved, list(notes.values())


def _describe_run(config: RunConfig) -> str:
    start = ""
    if config.init is not None:
        frozen = f", frozen for {config.freeze_epochs} epoch(s)" if config.freeze_epochs else ""
        start = f", init {config.init} (backbone lr x{config.backbone_lr_scale:g}{frozen})"
    return (f"== {config.task} / {config.model}: {config.image_size} px, batch "
            f"{config.batch_size}, {config.epochs} epochs, lr {config.learning_rate}, "
            f"seed {config.seed}, {config.dtype}{start}")


def _describe_summary(summary: dict) -> str:
    parts = [f"{name} {v['mean']:.3f} ± {v['std']:.3f}" for name, v in summary["metrics"].items()]
    return (f"== {summary['task']} / {summary['model']}: {summary['folds_done']}/"
            f"{summary['folds_expected']} folds; " + ", ".join(parts))


def prepare_data(*, source: str, data_dir: str, image_size: int = 256, strict: bool = False,
                 crop: str = "none", log: Log = print):
    """Build the TFDS dataset from a TOP-layout directory and print the summary of bad rows
    (and, with crop="fov", of each image's field-of-view decision)."""
    from jaxfundus.data.fov import CROP
    from jaxfundus.data.tfds_dataset import build_dataset

    result = build_dataset(Path(source), Path(data_dir), image_size=image_size, strict=strict,
                           crop=crop)
    cropping = " (cropped to the field of view)" if result.crop == "fov" else ""
    log(f"prepared {result.n_kept} of {result.n_rows} rows at {image_size} px{cropping} into "
        f"{result.dataset_dir}")
    if result.fov_path is not None:
        cropped = sum(row.action == CROP for row in result.fov_rows)
        log(f"field of view: {cropped} images cropped, {len(result.fov_rows) - cropped} kept "
            f"whole; each image's decision is in {result.fov_path}:")
        _log_some([f"  row {row.row}: {row.filename}: {row.describe()}"
                   for row in result.fov_rows], log)
    if result.bad_rows:
        log(f"skipped {len(result.bad_rows)} bad rows ({result.n_missing} image files missing); "
            f"listed in {result.report_path}:")
        _log_some([f"  row {bad.row}: {bad.filename}: {bad.reason}" for bad in result.bad_rows],
                  log)
    return result


def _log_some(lines: list[str], log: Log, limit: int = 20) -> None:
    for line in lines[:limit]:
        log(line)
    if len(lines) > limit:
        log(f"  ... and {len(lines) - limit} more")


def synthesize(*, out: str, seed: int = 0, log: Log = print, **options) -> dict:
    """Write a synthetic TOP-layout directory (data.csv, img/, lesion masks/) into `out` and
    return its summary. `options` are jaxfundus.synthetic.generate's (scale, style, width,
    height, severity, min_images_per_class); its defaults with seed 0 give the embedded default
    data, another seed an independent replicate: new patients, eyes and lesions."""
    from jaxfundus import synthetic

    try:
        summary = synthetic.generate(out, seed=seed, masks=True, **options)
    except (ValueError, FileExistsError) as error:
        raise ConfigError(f"synthesize: {error}") from None
    log(f"wrote {summary['n_images']} synthetic images of {summary['n_patients']} patients "
        f"(seed {seed}) into {out}; prepare them with `invoke data --source={out} "
        f"--data-dir=DIR --image-size=64`")
    return summary


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
    from jaxfundus.report import write_report

    path = write_report(Path(workdir))
    log(f"report: {path}")
    return path


def compare(*, task: str, workdir: str = "runs", as_json: bool = False,
            log: Log = print) -> list[dict]:
    """Paired AUROC differences between the trained models of a task on the same test images
    (interval from a patient bootstrap; DeLong p-value where one class is positive)."""
    from jaxfundus.evaluate.comparison import compare_runs
    from jaxfundus.methods.kinds import kind_of
    from jaxfundus.runs import load_run, trained_models

    spec = load_task(task)
    trained = [run for model in (*spec.models, *trained_models(workdir, spec))
               if (run := load_run(workdir, spec, model)).folds]
    if len(trained) < 2:
        raise ConfigError(f"compare needs two trained models of {task} in {workdir}; trained: "
                          f"{', '.join(run.model for run in trained) or 'none'}")
    results = []
    for found in compare_runs(trained, kind_of(spec).roc_targets(spec.classes)):
        if isinstance(found, str):
            log(f"not compared: {found}")
            continue
        results.append(found.to_dict())
        log(json.dumps(found.to_dict()) if as_json else found.to_text())
    return results


def predict(*, task: str, model: str | None = None, image: str | None = None,
            folder: str | None = None, as_json: bool = False, explain: bool = False,
            out: str | None = None, workdir: str = "runs", log: Log = print,
            warn: Log = print) -> int:
    """Score one image or a folder; returns the number of files that could not be scored.

    Anomaly detectors also write an anomaly-map PNG per image into `out` (default
    WORKDIR/<task>/<model>/anomaly-maps). explain: also write a Grad-CAM overlay PNG per image
    (and explained class) into `out` (default WORKDIR/<task>/<model>/explanations). The
    output names the files."""
    from jaxfundus.compile_cache import enable_compilation_cache
    from jaxfundus.predict import EXPLANATIONS, Predictor, image_files, predict_files

    files = image_files(image, folder)
    enable_compilation_cache()
    predictor = Predictor(workdir, task, model, out=out)
    explain_to = None
    if explain:
        predictor.explainers()  # a method without saliency maps fails before any image
        explain_to = Path(out) if out else predictor.directory / EXPLANATIONS
    failures = 0
    for prediction, error in predict_files(predictor, files, explain_to):
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
        where = f"{workers} worker processes" if workers else "in this process: one worker"
        log(json.dumps(result) if as_json else
            f"pipeline: {result['img_per_s_per_worker']:.1f} images/s per worker, "
            f"{result['img_per_s']:.1f} in all ({image_size} px from stored "
            f"{result['stored_size']} px, batch {batch_size}, {where})")
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
