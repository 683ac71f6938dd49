"""Typed experiment configuration: tasks and presets are data in `experiments/`, resolved here.

`experiments/` sits at the top of the repository and ships inside the package as
`jaxfundus.experiments` (pyproject.toml maps the folder), so an installed wheel reads the same
files. Every `RunConfig` value, whether from a preset, `--set key=value` or a keyword argument,
is checked against the field's type and range with one set of messages.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import math
import os
import tomllib
import types
import typing
from collections.abc import Collection, Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

BALANCE_MODES = ("class-weights", "none")
ANOMALY_TEST_SETS = ("patients", "study-imbalanced", "study-reduced")
THRESHOLD_CRITERIA = ("f1", "youden")
DTYPES = ("float32", "bfloat16")
AUTO_WORKERS = -1  # RunConfig.workers: as many input processes as the accelerator needs
# What one accelerator's training step consumes and what one input worker process delivers,
# for ResNet-50 at 256 px, batch 32 (docs/performance.md): an A100's published ~2,500 img/s
# and the per-worker rate of `invoke bench --pipeline --image-size=256` on one of our cores.
ACCELERATOR_IMAGES_PER_S = 2500
WORKER_IMAGES_PER_S = 500
# How an anomaly detector turns its per-pixel anomaly map into one image score
# (jaxfundus.anomaly_scores); "latent" is GANomaly's latent distance, not a map pooling.
IMAGE_SCORES = ("mean", "max", "top-k", "latent")


class ConfigError(ValueError):
    """A task, model, preset or option that does not exist or does not fit (message says which)."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One row of the task matrix, read from `experiments/<name>.toml`."""

    name: str
    description: str
    kind: str
    classes: tuple[str, ...]
    models: tuple[str, ...]
    cv_folds: int
    balance_normals: bool = False
    study: dict[str, str] = dataclasses.field(default_factory=dict)
    # RunConfig values this task sets (its file's [settings] table), checked like --set values.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written to `config.json` in the run folder."""

    task: str
    model: str
    preset: str
    image_size: int
    batch_size: int
    epochs: int
    learning_rate: float
    patience: int
    checkpoint_every_steps: int
    log_every_steps: int = 50  # step metrics reach the host (and the NaN guard) this often
    seed: int = 0
    weight_decay: float = 1e-4
    test_fraction: float = 0.2
    val_fraction: float = 0.25
    balance: str = "class-weights"
    augment: bool = True
    dtype: str = "float32"
    workers: int = 0  # input worker processes; 0: in this process; -1: auto (input_workers)
    threshold: float | None = None
    threshold_criterion: str = "f1"
    anomaly_test_set: str = "patients"
    # Supervised: fit a temperature on the validation logits; test metrics and predict then use
    # the calibrated probabilities.
    calibrate: bool = False
    data_dir: str | None = None
    workdir: str = "runs"
    # How the classifier starts (jaxfundus.models.initialization): None from scratch,
    # "imagenet", "imagenet-if-cached" or a weights file. The fine-tuning settings below apply
    # only to a pretrained backbone.
    init: str | None = None
    freeze_epochs: int = 0  # first epochs train the head alone (backbone frozen, BN in eval)
    backbone_lr_scale: float = 0.1  # backbone peak learning rate = this x learning_rate
    # Anomaly detectors. The image score pooled from the anomaly map (IMAGE_SCORES), top-k's
    # share of pixels in percent, and the Gaussian smoothing of the map in pixels.
    image_score: str = "mean"
    image_score_k: float = 1.0
    image_score_sigma: float = 1.0
    # Reconstruction loss: weight of (1 - SSIM) next to the pixel error (VAE).
    ssim_weight: float = 0.0
    # Diseases whose lesions a detector never trains on, comma-separated (e.g. "AMD,RVO"; "" or
    # "none": none). On the generator's data the test split then holds normals and images of
    # only these diseases, and validation none of them (the held-out-lesion evaluation).
    heldout_diseases: str = ""
    # Diseases whose lesions a detector never trains on either, and whose images alone (with
    # normals) make up validation on the generator's data: checkpoint and threshold are then
    # chosen on lesion types the detector has not seen, as the held-out test grades it. It may
    # name held-out diseases: validation then holds other patients' images of them, as
    # validation on real photographs holds real diseases.
    validation_diseases: str = ""
    # Synthetic anomalies (DRAEM): the share of training images that get one, and the shares
    # of those that get a texture and a change of existing structure (swelling, shrinking,
    # paler or darker tone); the rest get disease lesions.
    anomaly_probability: float = 0.5
    texture_probability: float = 0.5
    structure_probability: float = 0.0
    # DRAEM's width: channels at the first level of both sub-networks (doubling below it).
    draem_features: int = 16
    # DRAEM evaluates an exponential moving average of its weights, this decay per step
    # (0: the latest weights).
    draem_ema_decay: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def task_names() -> list[str]:
    """All task names of the matrix, in a stable order."""
    return sorted(entry.name.removesuffix(".toml") for entry in _experiments().iterdir()
                  if entry.name.endswith(".toml") and entry.name not in _NON_TASK_FILES)


def task_groups() -> dict[str, list[str]]:
    """Named groups of tasks (e.g. `rare-vs-normal`)."""
    return _read_toml(_experiments() / "groups.toml")


def expand_task(name: str) -> list[str]:
    """A task name or group name -> the task names it stands for."""
    groups = task_groups()
    if name in groups:
        return list(groups[name])
    load_task(name)
    return [name]


def load_task(name: str) -> TaskSpec:
    """Read one task file; unknown names fail with the list of known tasks."""
    path = _experiments() / f"{name}.toml"
    if path.name in _NON_TASK_FILES or not path.is_file():
        known = ", ".join(task_names() + list(task_groups()))
        raise ConfigError(f"unknown task '{name}'; choose from: {known}")
    raw = _read_toml(path)
    where = f"experiments/{name}.toml [settings]"
    settings = {key: check_value(key, value, where)
                for key, value in raw.get("settings", {}).items()}
    spec = TaskSpec(
        name=name,
        description=raw["description"],
        kind=raw["kind"],
        classes=tuple(raw["classes"]),
        models=tuple(raw["models"]),
        cv_folds=int(raw.get("cv_folds", 0)),
        balance_normals=bool(raw.get("balance_normals", False)),
        study=dict(raw.get("study", {})),
        settings=settings,
    )
    return spec


def preset_names() -> list[str]:
    return list(_presets())


def input_workers(workers: int, cores: int | None = None) -> int:
    """The input worker processes to start for RunConfig.workers.

    `AUTO_WORKERS` (-1) becomes min(cores - 1, workers needed to feed the accelerator): one core
    stays with the process that runs the steps, and more workers than the step consumes only
    cost memory. `cores` defaults to the cores this process may run on. Other values are kept.
    """
    if workers != AUTO_WORKERS:
        return workers
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    needed = math.ceil(ACCELERATOR_IMAGES_PER_S / WORKER_IMAGES_PER_S)
    return max(0, min(cores - 1, needed))


def default_preset() -> str:
    """`cpu` without an accelerator, `paper` (the study's sizes) with one."""
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "paper"


def resolve_config(
    task: str, model: str | None = None, preset: str | None = None, **overrides: Any
) -> RunConfig:
    """Task + model + preset -> RunConfig, each layer overriding the one before: the preset,
    its per-model section, the task file's [settings], then the explicit overrides.

    `overrides` with value None are ignored, so CLI flags can be passed through unchanged;
    `init="scratch"` is stored as None (both mean a random start).
    Raises ConfigError for an unknown name or option and for a value of the wrong type or range.
    Whether the model fits the task is the method registry's call (jaxfundus.methods.check_fits).
    """
    spec = load_task(task)
    model = model or spec.models[0]
    preset = preset or default_preset()
    presets = _presets()
    if preset not in presets:
        raise ConfigError(f"unknown preset '{preset}'; choose from: {', '.join(presets)}")
    where = f"presets.toml [{preset}]"
    values = {key: check_value(key, value, where) for key, value in presets[preset].items()
              if key not in ("description", "models")}
    where = f"presets.toml [{preset}.models.{model}]"
    values.update({key: check_value(key, value, where)
                   for key, value in presets[preset].get("models", {}).get(model, {}).items()})
    values.update(spec.settings)
    values.update({key: check_value(key, value) for key, value in overrides.items()
                   if value is not None})
    missing = [name for name in _REQUIRED if name not in values]
    if missing:
        raise ConfigError(f"presets.toml [{preset}] lacks {', '.join(missing)}")
    if values.get("init") == "scratch":
        values["init"] = None
    return check_config(RunConfig(task=task, model=model, preset=preset, **values))


def settable_fields() -> tuple[str, ...]:
    """The RunConfig fields `--set` accepts: all but the task, model and preset (own flags)."""
    return tuple(name for name in _FIELD_TYPES if name not in _SELECTORS)


def parse_settings(assignments: Iterable[str],
                   allowed: Collection[str] | None = None) -> dict[str, Any]:
    """`--set key=value` texts -> typed overrides, e.g. ["epochs=3", "augment=no"] ->
    {"epochs": 3, "augment": False}.

    Each value is parsed as its RunConfig field's type: int, float, bool (true/false, 1/0,
    yes/no), str, and `none` for fields that may be None. `allowed` limits the keys (default:
    `settable_fields()`). Raises ConfigError naming the key, the value and the expected type, or
    the valid keys for an unknown one; a key given twice is an error too.
    """
    allowed = tuple(allowed) if allowed is not None else settable_fields()
    settings: dict[str, Any] = {}
    given: dict[str, str] = {}
    for text in assignments:
        key, equals, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key:
            raise ConfigError(f"--set '{text}': expected key=value, e.g. --set epochs=3")
        if key in _SELECTORS:
            raise ConfigError(f"--set {key}=...: the {key} is chosen with --{key}")
        if key not in allowed:
            raise ConfigError(f"unknown option '{key}'; valid keys: {', '.join(allowed)}")
        if key in given:
            raise ConfigError(f"option '{key}' is given twice ({key}={given[key]} and {text})")
        given[key] = value
        settings[key] = _parse_text(key, value)
    return settings


def check_value(key: str, value: Any, where: str = "") -> Any:
    """A RunConfig value checked against its field's type (an int is a valid float).

    Raises ConfigError `[where: ]key = value: expected <type>`, or for an unknown key one that
    lists the valid keys.
    """
    prefix = f"{where}: " if where else ""
    if key not in _FIELD_TYPES or key in _SELECTORS:
        raise ConfigError(f"{prefix}unknown option '{key}'; valid keys: "
                          + ", ".join(settable_fields()))
    allowed = _FIELD_TYPES[key]
    if value is None and types.NoneType in allowed:
        return None
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, int | float) and float in allowed:
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return value
    raise ConfigError(f"{prefix}{key} = {value!r}: expected {_describe(allowed)}")


def _parse_text(key: str, text: str) -> Any:
    allowed = _FIELD_TYPES[key]
    word = text.strip().lower()
    if types.NoneType in allowed and word in ("none", "null"):
        return None
    if bool in allowed and word in _BOOL_WORDS:
        return _BOOL_WORDS[word]
    for kind in (int, float):
        if kind in allowed:
            try:
                return kind(text)
            except ValueError:
                pass
    if str in allowed:
        return text
    raise ConfigError(f"{key} = {text!r}: expected {_describe(allowed)}")


def _describe(allowed: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES[kind] for kind in allowed)


def _field_types() -> dict[str, tuple[type, ...]]:
    """RunConfig field -> the types it accepts, read from the annotations (`float | None`...)."""
    hints = typing.get_type_hints(RunConfig)
    return {field.name: (typing.get_args(hints[field.name])
                         if isinstance(hints[field.name], types.UnionType)
                         else (hints[field.name],))
            for field in dataclasses.fields(RunConfig)}


def check_config(config: RunConfig) -> RunConfig:
    """`config` itself when its values fit together; ConfigError naming the one that does not."""
    for key, choices in (("balance", BALANCE_MODES), ("anomaly_test_set", ANOMALY_TEST_SETS),
                         ("threshold_criterion", THRESHOLD_CRITERIA), ("dtype", DTYPES),
                         ("image_score", IMAGE_SCORES)):
        value = getattr(config, key)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(choices)}")
    for key, minimum in _MINIMUMS.items():
        value = getattr(config, key)
        if value < minimum:
            raise ConfigError(f"{key} = {value!r}: expected a value >= {minimum}")
    for key in ("test_fraction", "val_fraction"):
        value = getattr(config, key)
        if not 0 < value < 1:
            raise ConfigError(f"{key} = {value!r}: expected a fraction between 0 and 1")
    for key in ("anomaly_probability", "texture_probability", "structure_probability"):
        value = getattr(config, key)
        if not 0 <= value <= 1:
            raise ConfigError(f"{key} = {value!r}: expected a probability between 0 and 1")
    if not 0 <= config.draem_ema_decay < 1:
        raise ConfigError(f"draem_ema_decay = {config.draem_ema_decay!r}: expected a decay in "
                          "[0, 1)")
    if config.texture_probability + config.structure_probability > 1:
        raise ConfigError(f"texture_probability + structure_probability = "
                          f"{config.texture_probability} + {config.structure_probability}: "
                          "expected at most 1 (they are shares of the same anomalies)")
    if not 0 < config.image_score_k <= 100:
        raise ConfigError(f"image_score_k = {config.image_score_k!r}: expected a percentage in "
                          "(0, 100]")
    if not config.learning_rate > 0:
        raise ConfigError(f"learning_rate = {config.learning_rate!r}: expected a value > 0")
    if not config.backbone_lr_scale > 0:
        raise ConfigError(f"backbone_lr_scale = {config.backbone_lr_scale!r}: expected a value "
                          "> 0 (freeze the backbone with freeze_epochs instead)")
    # "imagenet-if-cached" is checked once resolved (commands.train), as it may mean scratch.
    if (config.init not in (None, "scratch", "imagenet-if-cached")
            and config.freeze_epochs >= config.epochs):
        raise ConfigError(f"freeze_epochs = {config.freeze_epochs} leaves no epoch to fine-tune "
                          f"the backbone in (epochs = {config.epochs}); expected fewer")
    return config


def _experiments() -> Traversable:
    """The task matrix: the checkout's top-level folder when running from a source checkout
    (the package's own copy of it), else the installed jaxfundus.experiments package data."""
    checkout = Path(__file__).resolve().parent.parent / "experiments"
    if (checkout / "presets.toml").is_file():
        return checkout
    if importlib.util.find_spec("jaxfundus.experiments") is None:
        raise ConfigError(f"the task matrix is missing: neither the jaxfundus.experiments "
                          f"package nor {checkout} exists (reinstall jaxfundus)")
    return importlib.resources.files("jaxfundus.experiments")


def _presets() -> dict[str, Any]:
    return _read_toml(_experiments() / "presets.toml")


def _read_toml(path: Traversable) -> dict[str, Any]:
    with path.open("rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None


_NON_TASK_FILES = ("presets.toml", "groups.toml")
_SELECTORS = ("task", "model", "preset")  # chosen by --task/--model/--preset, not --set
_FIELD_TYPES = _field_types()
_REQUIRED = tuple(field.name for field in dataclasses.fields(RunConfig)
                  if field.default is dataclasses.MISSING and field.name not in _SELECTORS)
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text",
               types.NoneType: "none"}
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_MINIMUMS = {"image_size": 16, "batch_size": 1, "epochs": 1, "patience": 0,
             "checkpoint_every_steps": 0, "log_every_steps": 0, "workers": AUTO_WORKERS,
             "weight_decay": 0, "freeze_epochs": 0, "image_score_sigma": 0, "ssim_weight": 0,
             "draem_features": 1}
