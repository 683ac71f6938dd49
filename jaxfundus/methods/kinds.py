"""Task kinds: what a task's `kind` in experiments/<task>.toml means, in one place.

A kind decides which images a task uses and what their targets are, how they are split, how
fold models' outputs become one prediction, and how the report reads its results (table
metrics, trivial baseline, ROC curves, confusion matrix). Nothing here imports jax, so the
report can use it without starting a backend.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.config import ConfigError, RunConfig, TaskSpec
from jaxfundus.data.labels import DISEASES, NORMAL
from jaxfundus.data.selection import (
    TaskExamples,
    select_multi_label,
    select_normal_vs_anomalous,
    select_single_label,
)
from jaxfundus.data.splits import TEST, VAL, assign_anomaly_splits, assign_splits
from jaxfundus.evaluate.thresholds import ScoreNormalizer
from jaxfundus.metrics import confusion_matrix
from jaxfundus.runs import Fold, Run
from jaxfundus.synthetic import SUMMARY_FILE

# A ROC curve family: (curve name, truth column, its positive value, score column).
RocTarget = tuple[str, str, Any, str]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What `invoke predict` says about one image; `extra` carries method outputs (e.g. files)."""

    file: str
    probabilities: dict[str, float] | None = None  # supervised (multi-label: independent)
    prediction: str | list[str] | None = None
    score: float | None = None  # anomaly: normalised with validation statistics
    anomalous: bool | None = None
    threshold: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        record = {k: v for k, v in dataclasses.asdict(self).items()
                  if v is not None and k != "extra"}
        return json.dumps({**record, **self.extra})

    def to_text(self) -> str:
        if self.score is not None:
            verdict = "ANOMALOUS" if self.anomalous else "normal"
            text = f"{self.file}: score {self.score:.4f} (threshold {self.threshold:.4f}) {verdict}"
        else:
            ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
            probs = ", ".join(f"{name} {p:.3f}" for name, p in ranked)
            text = f"{self.file}: {self.prediction} ({probs})"
        return text + "".join(f"; {k}: {v}" for k, v in self.extra.items())


class Kind:
    """Base of the task kinds; subclasses fill in the parts that differ."""

    name: str
    baseline_name: str
    # Report table column -> the summary.json metric it shows.
    table_metrics: dict[str, str]
    select: Callable[[pd.DataFrame, TaskSpec, int], TaskExamples]

    def assign_split(self, examples: TaskExamples, spec: TaskSpec, config: RunConfig,
                     fold: int, dataset: Any = None) -> np.ndarray:
        """'train'/'val'/'test' (or 'unused') per image of `examples`, patients disjoint.
        `dataset` (jaxfundus.data.datasets.Dataset) is the data the examples come from."""
        frame = examples.frame
        return assign_splits(frame["patient_id"].to_numpy(), frame["stratum"].to_numpy(),
                             seed=config.seed, folds=spec.cv_folds, fold=fold,
                             test_fraction=config.test_fraction, val_fraction=config.val_fraction)

    def check_split(self, examples: TaskExamples, split: np.ndarray, fold: int) -> None:
        """Raise ConfigError, before any training, when a split cannot serve this kind."""

    def split_notes(self, config: RunConfig, dataset: Any) -> list[str]:
        """Lines for the training log that say how this kind split the data, if specially."""
        return []

    def targets(self, frame: pd.DataFrame, examples: TaskExamples) -> np.ndarray:
        """One target row per image: int32 class ids (label column)."""
        return frame["label"].to_numpy().astype(np.int32)

    def baseline(self, fold: Fold, classes: tuple[str, ...]) -> float | None:
        """Accuracy of the trivial predictor (baseline_name) on this fold's test split."""
        return fold.metrics.get("baseline_majority_accuracy")

    def baseline_f1(self, fold: Fold) -> float | None:
        return None

    def roc_targets(self, classes: tuple[str, ...]) -> list[RocTarget]:
        return [(c, "label", c, f"prob_{c}") for c in classes[len(classes) == 2:]]

    def confusion(self, run: Run) -> tuple[np.ndarray | None, tuple[str, ...], str]:
        """(test counts summed over folds, class names, a caption note); without a matrix
        (None), the note says why."""
        n = len(run.spec.classes)
        matrices = [np.asarray(f.metrics["confusion_matrix"]) for f in run.folds
                    if np.shape(f.metrics.get("confusion_matrix")) == (n, n)]
        if not matrices:
            return None, (), "no confusion matrix (no confusion_matrix in metrics.json)"
        return sum(matrices), run.spec.classes, _pooled(run)

    def disease_vs_normal(self, spec: TaskSpec) -> str | None:
        """The disease of a normal-vs-disease task (the study's Fig 12 group), else None."""
        return None

    def prediction(self, file: str, spec: TaskSpec, outputs: list[dict[str, np.ndarray]],
                   fold_metrics: list[dict]) -> Prediction:
        """One image's prediction from each finished fold model's eval outputs (leading dim 1)."""
        probs = np.mean([o["probs"][0] for o in outputs], axis=0)
        probabilities = {c: float(p) for c, p in zip(spec.classes, probs, strict=True)}
        return Prediction(file, probabilities, spec.classes[int(probs.argmax())])


class SingleLabel(Kind):
    name = "single-label"
    baseline_name = "majority class"
    table_metrics = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
                     "auroc": "macro_auroc"}
    select = staticmethod(select_single_label)

    def disease_vs_normal(self, spec: TaskSpec) -> str | None:
        classes = spec.classes
        if len(classes) == 2 and classes[0] == NORMAL and classes[1] in DISEASES:
            return classes[1]
        return None


class MultiLabel(Kind):
    name = "multi-label"
    baseline_name = "most frequent class, top-1"
    table_metrics = {"auroc": "macro_auroc", "top1_accuracy": "top1_accuracy"}
    select = staticmethod(select_multi_label)
    decision_threshold = 0.5

    def targets(self, frame: pd.DataFrame, examples: TaskExamples) -> np.ndarray:
        """float32[N, D] multi-hot, one column per disease of the task."""
        return frame[examples.label_columns].to_numpy().astype(np.float32)

    def baseline(self, fold: Fold, classes: tuple[str, ...]) -> float | None:
        """Top-1 accuracy of always answering the most frequent class (normal = no disease)."""
        predictions = fold.predictions()
        columns = [f"label_{c}" for c in classes]
        if predictions is None or len(predictions) == 0 or not set(columns) <= set(predictions):
            return None
        labels = predictions[columns].to_numpy().astype(bool)
        true_classes = np.column_stack([~labels.any(axis=1), labels])
        return float(true_classes[:, true_classes.sum(axis=0).argmax()].mean())

    def roc_targets(self, classes: tuple[str, ...]) -> list[RocTarget]:
        return [(c, f"label_{c}", 1, f"prob_{c}") for c in classes]

    def confusion(self, run: Run) -> tuple[np.ndarray | None, tuple[str, ...], str]:
        return None, (), ("multi-label, no single confusion matrix (see its per-class ROC "
                          "curves)")

    def prediction(self, file: str, spec: TaskSpec, outputs: list[dict[str, np.ndarray]],
                   fold_metrics: list[dict]) -> Prediction:
        probs = np.mean([o["probs"][0] for o in outputs], axis=0)
        probabilities = {c: float(p) for c, p in zip(spec.classes, probs, strict=True)}
        found = [c for c, p in probabilities.items() if p >= self.decision_threshold]
        return Prediction(file, probabilities, found or [NORMAL])


class Anomaly(Kind):
    """Detectors trained on normal images only; any disease is an anomaly (label 1)."""

    name = "anomaly"
    baseline_name = "all anomalous"
    table_metrics = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
                     "auroc": "auroc", "f1": "f1"}
    select = staticmethod(select_normal_vs_anomalous)

    def assign_split(self, examples: TaskExamples, spec: TaskSpec, config: RunConfig,
                     fold: int, dataset: Any = None) -> np.ndarray:
        """The anomaly split (config.anomaly_test_set), then, with held-out lesions
        (`evaluated_heldout`), test keeps normals and images of only held-out diseases, and
        validation normals and images of none of them, or of only the validation diseases
        (`evaluated_validation`) when there are some; the others become 'unused'."""
        frame = examples.frame
        split = assign_anomaly_splits(frame["patient_id"].to_numpy(), frame["label"].to_numpy(),
                                      seed=config.seed, test_set=config.anomaly_test_set,
                                      test_fraction=config.test_fraction,
                                      val_fraction=config.val_fraction)
        heldout = evaluated_heldout(config, dataset)
        validation = evaluated_validation(config, dataset)
        if not heldout and not validation:
            return split
        diseases = disease_matrix(frame, dataset.index)

        def beyond(allowed: tuple[str, ...]) -> np.ndarray:
            """Images with a disease outside `allowed`."""
            return np.delete(diseases, [DISEASES.index(d) for d in allowed], axis=1).any(axis=1)

        in_val = validation or tuple(d for d in DISEASES if d not in heldout)
        out_of_test = (split == TEST) & beyond(heldout or DISEASES)
        out_of_val = (split == VAL) & beyond(in_val)
        return np.where(out_of_test | out_of_val, "unused", split)

    def split_notes(self, config: RunConfig, dataset: Any) -> list[str]:
        heldout, validation = heldout_diseases(config), validation_diseases(config)
        if not heldout and not validation:
            return []
        if not generated_data(dataset):
            return [f"held-out lesions {', '.join(untrained_diseases(config))}: the data are "
                    "not the generator's (no lesion was painted), so every test and validation "
                    "image counts"]
        notes = []
        if heldout:
            notes.append(f"held-out lesions: {', '.join(heldout)} (never trained on); test: "
                         "normals and images of only these diseases")
        if validation:
            notes.append(f"validation lesions: {', '.join(validation)} (never trained on); "
                         "validation: normals and images of only these diseases")
        else:
            notes.append("validation: normals and images of none of the held-out diseases")
        return notes

    def check_split(self, examples: TaskExamples, split: np.ndarray, fold: int) -> None:
        # The decision threshold is fitted on validation: it needs normal and anomalous images.
        val_labels = examples.frame["label"].to_numpy()[split == VAL]
        if len(np.unique(val_labels)) < 2:
            raise ConfigError(
                f"fold {fold}: the validation split has {len(val_labels)} images, all "
                f"{'anomalous' if val_labels.any() else 'normal'}; the decision threshold needs "
                "both (use more data or a larger val_fraction)")

    def baseline(self, fold: Fold, classes: tuple[str, ...]) -> float | None:
        return (fold.metrics.get("baseline_all_anomalous") or {}).get("accuracy")

    def baseline_f1(self, fold: Fold) -> float | None:
        return (fold.metrics.get("baseline_all_anomalous") or {}).get("f1")

    def roc_targets(self, classes: tuple[str, ...]) -> list[RocTarget]:
        return [("anomalous", "label", 1, "score")]

    def confusion(self, run: Run) -> tuple[np.ndarray | None, tuple[str, ...], str]:
        frames = [p for f in run.folds if (p := f.predictions()) is not None
                  and {"label", "pred"} <= set(p)]
        if not frames:
            return None, (), "no confusion matrix (no label/pred in predictions.csv)"
        both = pd.concat(frames)
        matrix = confusion_matrix(both["label"].to_numpy(dtype=np.int64),
                                  both["pred"].to_numpy(dtype=np.int64), 2)
        thresholds = ", ".join(f"{_number_text(f.metrics.get('threshold'))} "
                               f"({f.metrics.get('threshold_source', '?')})" for f in run.folds)
        return matrix, ("normal", "anomalous"), f"{_pooled(run)}, threshold {thresholds}"

    def prediction(self, file: str, spec: TaskSpec, outputs: list[dict[str, np.ndarray]],
                   fold_metrics: list[dict]) -> Prediction:
        # Each fold's score on its own validation-fitted scale, then averaged.
        scores = [float(ScoreNormalizer.from_dict(m["normalizer"]).transform(o["score"][0]))
                  for m, o in zip(fold_metrics, outputs, strict=True)]
        threshold = float(np.mean([m["threshold"] for m in fold_metrics]))
        score = float(np.mean(scores))
        return Prediction(file, score=score, anomalous=score >= threshold, threshold=threshold)


def _disease_names(config: RunConfig, field: str) -> tuple[str, ...]:
    """A comma-separated disease list of `config` ("AMD,RVO", "" or "none") as names in
    DISEASES order; ConfigError naming a bad one."""
    text = getattr(config, field).strip()
    names = [] if text.lower() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DISEASES]
    if unknown:
        raise ConfigError(f"{field}: {unknown[0]!r} is not a disease; choose from "
                          f"{', '.join(DISEASES)}")
    return tuple(d for d in DISEASES if d in names)


def heldout_diseases(config: RunConfig) -> tuple[str, ...]:
    """config.heldout_diseases as disease names in DISEASES order; ConfigError naming a bad
    one."""
    return _disease_names(config, "heldout_diseases")


def validation_diseases(config: RunConfig) -> tuple[str, ...]:
    """config.validation_diseases as disease names in DISEASES order; ConfigError naming a
    bad one. A disease may also be held out for the test: validation then holds other
    patients' images of it, as validation on real photographs holds real diseases."""
    return _disease_names(config, "validation_diseases")


def untrained_diseases(config: RunConfig) -> tuple[str, ...]:
    """The diseases whose lesions a detector never trains on: held out for the test or for
    validation, in DISEASES order."""
    unseen = heldout_diseases(config) + validation_diseases(config)
    return tuple(d for d in DISEASES if d in unseen)


def generated_data(dataset: Any) -> bool:
    """Whether `dataset` came from the fundus generator (its lesions were painted): the
    synthetic default, or prepared data whose source folder holds the generator's summary."""
    if dataset is None:
        return False
    masks = getattr(dataset, "masks_dir", None)
    return bool(dataset.synthetic) or (
        masks is not None and (Path(masks).parent / SUMMARY_FILE).is_file())


def evaluated_heldout(config: RunConfig, dataset: Any) -> tuple[str, ...]:
    """The held-out diseases the evaluation leaves out of training and validation: those of
    config.heldout_diseases on the generator's data, none on real photographs."""
    heldout = heldout_diseases(config)
    return heldout if heldout and generated_data(dataset) else ()


def evaluated_validation(config: RunConfig, dataset: Any) -> tuple[str, ...]:
    """The diseases whose images alone (with normals) make up validation: those of
    config.validation_diseases on the generator's data, none on real photographs."""
    validation = validation_diseases(config)
    return validation if validation and generated_data(dataset) else ()


def disease_matrix(frame: pd.DataFrame, index: pd.DataFrame) -> np.ndarray:
    """0/1 int[N, len(DISEASES)]: the diseases of each image of `frame` (its `index` column
    points into the data's `index` table)."""
    return index.set_index("index").loc[frame["index"], list(DISEASES)].to_numpy(np.int64)


KINDS: dict[str, Kind] = {kind.name: kind for kind in (SingleLabel(), MultiLabel(), Anomaly())}


def kind_of(spec: TaskSpec) -> Kind:
    """The Kind of a task; ConfigError naming the task file's bad `kind` otherwise."""
    if spec.kind not in KINDS:
        raise ConfigError(f"task '{spec.name}': kind '{spec.kind}' is not one of "
                          f"{', '.join(KINDS)}")
    return KINDS[spec.kind]


def _pooled(run: Run) -> str:
    return f" summed over {len(run.folds)} folds" if len(run.folds) > 1 else ""


def _number_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) and np.isfinite(value) else "?"
