"""Typed experiment configuration: tasks and presets are data in `experiments/`, resolved here."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
BALANCE_MODES = ("class-weights", "none")
ANOMALY_TEST_SETS = ("patients", "study-imbalanced", "study-reduced")


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
    seed: int = 0
    weight_decay: float = 1e-4
    test_fraction: float = 0.2
    val_fraction: float = 0.25
    balance: str = "class-weights"
    augment: bool = True
    dtype: str = "float32"
    workers: int = 0
    threshold: float | None = None
    threshold_criterion: str = "f1"
    anomaly_test_set: str = "patients"
    # Supervised: fit a temperature on the validation logits; test metrics and predict then use
    # the calibrated probabilities.
    calibrate: bool = False
    data_dir: str | None = None
    workdir: str = "runs"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def task_names() -> list[str]:
    """All task names of the matrix, in a stable order."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml") if p.stem not in _NON_TASK_FILES)


def task_groups() -> dict[str, list[str]]:
    """Named groups of tasks (e.g. `rare-vs-normal`)."""
    return _read_toml(EXPERIMENTS_DIR / "groups.toml")


def expand_task(name: str) -> list[str]:
    """A task name or group name -> the task names it stands for."""
    groups = task_groups()
    if name in groups:
        return list(groups[name])
    load_task(name)
    return [name]


def load_task(name: str) -> TaskSpec:
    """Read one task file; unknown names fail with the list of known tasks."""
    path = EXPERIMENTS_DIR / f"{name}.toml"
    if name in _NON_TASK_FILES or not path.exists():
        known = ", ".join(task_names() + list(task_groups()))
        raise ConfigError(f"unknown task '{name}'; choose from: {known}")
    raw = _read_toml(path)
    spec = TaskSpec(
        name=name,
        description=raw["description"],
        kind=raw["kind"],
        classes=tuple(raw["classes"]),
        models=tuple(raw["models"]),
        cv_folds=int(raw.get("cv_folds", 0)),
        balance_normals=bool(raw.get("balance_normals", False)),
        study=dict(raw.get("study", {})),
    )
    return spec


def preset_names() -> list[str]:
    return list(_read_toml(EXPERIMENTS_DIR / "presets.toml"))


def preset_model(preset: str, model: str) -> str:
    """The model a preset trains in place of a task's listed model (usually the same one)."""
    presets = _read_toml(EXPERIMENTS_DIR / "presets.toml")
    return presets.get(preset, {}).get("substitutes", {}).get(model, model)


def default_preset() -> str:
    """`cpu` without an accelerator, `paper` (the study's sizes) with one."""
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "paper"


def resolve_config(
    task: str, model: str | None = None, preset: str | None = None, **overrides: Any
) -> RunConfig:
    """Task + model + preset (+ per-model preset overrides) + explicit overrides -> RunConfig.

    `overrides` with value None are ignored, so CLI flags can be passed through unchanged.
    Whether the model fits the task is the method registry's call (jaxfundus.methods.check_fits).
    """
    spec = load_task(task)
    model = model or spec.models[0]
    preset = preset or default_preset()
    presets = _read_toml(EXPERIMENTS_DIR / "presets.toml")
    if preset not in presets:
        raise ConfigError(f"unknown preset '{preset}'; choose from: {', '.join(presets)}")
    values = {k: v for k, v in presets[preset].items()
              if k not in ("description", "models", "substitutes")}
    values.update(presets[preset].get("models", {}).get(model, {}))
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown option '{key}'")
        if value is not None:
            values[key] = value
    config = RunConfig(task=task, model=model, preset=preset, **values)
    _check(config)
    return config


def _check(config: RunConfig) -> None:
    if config.balance not in BALANCE_MODES:
        raise ConfigError(f"balance '{config.balance}' is not one of {BALANCE_MODES}")
    if config.anomaly_test_set not in ANOMALY_TEST_SETS:
        raise ConfigError(
            f"anomaly_test_set '{config.anomaly_test_set}' is not one of {ANOMALY_TEST_SETS}"
        )
    if config.threshold_criterion not in ("f1", "youden"):
        raise ConfigError(f"threshold_criterion '{config.threshold_criterion}' is not f1 or youden")
    if config.image_size < 16 or config.batch_size < 1 or config.epochs < 1:
        raise ConfigError("image_size must be >= 16, batch_size and epochs >= 1")


_NON_TASK_FILES = ("presets", "groups")


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)
