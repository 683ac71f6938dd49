"""Which images a task uses and what their labels are (the study's Table 1 rules, made explicit)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from jaxfundus.config import ConfigError, TaskSpec
from jaxfundus.data.labels import DISEASES, NORMAL

ABNORMAL = "abnormal"
MIN_IMAGES_PER_CLASS = 8


@dataclasses.dataclass(frozen=True)
class TaskExamples:
    """The images of one task.

    `frame` has one row per image: `index` (data-source index), `filename`, `patient_id`,
    `stratum` (int, for stratified splitting) and either `label` (int class id; for anomaly
    tasks 1 = anomalous) or, for multi-label tasks, one `label_<disease>` 0/1 column per class.
    `dropped` maps each selection rule to the number of images it removed.
    """

    frame: pd.DataFrame
    classes: tuple[str, ...]
    dropped: dict[str, int]

    @property
    def label_columns(self) -> list[str]:
        if "label" in self.frame:
            return ["label"]
        return [f"label_{c}" for c in self.classes]


def select_single_label(index: pd.DataFrame, task: TaskSpec, seed: int) -> TaskExamples:
    """Images whose labels contain exactly one of the task's classes (`normal` = no disease,
    `abnormal` = any disease); `balance_normals` samples normals down to the other class's size.

    `index` has one row per image with the disease columns. Raises ConfigError when a class has
    too few images.
    """
    base, diseases = _base(index)
    member = np.stack([_membership(diseases, c) for c in task.classes], axis=1)
    hits = member.sum(1)
    dropped = {
        "no task class": int((hits == 0).sum()),
        "more than one task class": int((hits > 1).sum()),
    }
    keep = hits == 1
    frame = base[keep].assign(label=member[keep].argmax(1))
    if task.balance_normals:
        frame, n_unsampled = _sample_normals(frame, task, seed)
        dropped["normals not sampled"] = n_unsampled
    frame = frame.assign(stratum=frame["label"]).reset_index(drop=True)
    _require_counts(task, frame["label"].to_numpy(), task.classes)
    return TaskExamples(frame, task.classes, dropped)


def select_multi_label(index: pd.DataFrame, task: TaskSpec, seed: int) -> TaskExamples:
    """Every image, with one 0/1 `label_<disease>` column per task class (none = normal)."""
    base, diseases = _base(index)
    columns = [DISEASES.index(c) for c in task.classes]
    labels = diseases[:, columns]
    frame = base.copy()
    for i, name in enumerate(task.classes):
        frame[f"label_{name}"] = labels[:, i]
    # Stratify on the rarest disease an image carries, so rare classes reach every split.
    frequency = labels.sum(0)
    rarity = np.where(labels == 1, frequency[None, :], np.iinfo(np.int64).max)
    frame["stratum"] = np.where(labels.sum(1) > 0, rarity.argmin(1), len(task.classes))
    for i, name in enumerate(task.classes):
        if frequency[i] < MIN_IMAGES_PER_CLASS:
            raise ConfigError(_too_few_message(task, name, int(frequency[i])))
    return TaskExamples(frame, task.classes, {})


def select_normal_vs_anomalous(index: pd.DataFrame, task: TaskSpec, seed: int) -> TaskExamples:
    """Every image; `label` 1 (anomalous) when it has any disease, 0 when normal."""
    base, diseases = _base(index)
    frame = base.assign(label=(diseases.sum(1) > 0).astype(np.int64))
    frame["stratum"] = frame["label"]
    _require_counts(task, frame["label"].to_numpy(), ("normal", "anomalous"))
    return TaskExamples(frame, task.classes, {})


def _base(index: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    diseases = index[list(DISEASES)].to_numpy(dtype=np.int64)
    return index[["index", "filename", "patient_id"]].reset_index(drop=True), diseases


def _membership(diseases: np.ndarray, name: str) -> np.ndarray:
    if name == NORMAL:
        return diseases.sum(1) == 0
    if name == ABNORMAL:
        return diseases.sum(1) > 0
    if name not in DISEASES:
        raise ConfigError(f"class '{name}' is not normal, abnormal or one of {DISEASES}")
    return diseases[:, DISEASES.index(name)] == 1


def _sample_normals(frame: pd.DataFrame, task: TaskSpec, seed: int) -> tuple[pd.DataFrame, int]:
    normal_id = task.classes.index(NORMAL)
    is_normal = frame["label"].to_numpy() == normal_id
    n_target = int((~is_normal).sum())
    normal_rows = np.flatnonzero(is_normal)
    if len(normal_rows) <= n_target:
        return frame, 0
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(normal_rows, size=n_target, replace=False))
    keep = np.sort(np.concatenate([np.flatnonzero(~is_normal), chosen]))
    return frame.iloc[keep], len(normal_rows) - n_target


def _require_counts(task: TaskSpec, labels: np.ndarray, names) -> None:
    counts = np.bincount(labels, minlength=len(names))
    for name, count in zip(names, counts, strict=True):
        if count < MIN_IMAGES_PER_CLASS:
            raise ConfigError(_too_few_message(task, name, int(count)))


def _too_few_message(task: TaskSpec, name: str, count: int) -> str:
    return (
        f"task '{task.name}' needs at least {MIN_IMAGES_PER_CLASS} images of class '{name}', "
        f"the data has {count}"
    )
