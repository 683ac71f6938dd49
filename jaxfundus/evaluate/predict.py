"""Score new photographs with a trained run: per-image class probabilities or anomaly scores.

Any size and aspect (e.g. a square 1411x1411 JPEG with a black border) goes through the
training preprocessing: letterbox to the stored size, resize to the model's size, normalise.
A cross-validated run predicts with the mean of its fold models.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np

from jaxfundus.config import ConfigError, RunConfig, load_task
from jaxfundus.data.images import ImageError, letterbox, load_rgb
from jaxfundus.data.pipeline import normalize, resize
from jaxfundus.evaluate.thresholds import ScoreNormalizer
from jaxfundus.experiment import run_dir, saved_config, task_folds
from jaxfundus.train.loop import Trainer
from jaxfundus.train.mesh import DataParallel
from jaxfundus.train.methods import make_method


@dataclasses.dataclass(frozen=True)
class Prediction:
    file: str
    probabilities: dict[str, float] | None = None  # supervised (multi-label: independent)
    prediction: str | list[str] | None = None
    score: float | None = None  # anomaly: normalised with validation statistics
    anomalous: bool | None = None
    threshold: float | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    def to_text(self) -> str:
        if self.score is not None:
            verdict = "ANOMALOUS" if self.anomalous else "normal"
            return f"{self.file}: score {self.score:.4f} (threshold {self.threshold:.4f}) {verdict}"
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        probs = ", ".join(f"{name} {p:.3f}" for name, p in ranked)
        return f"{self.file}: {self.prediction} ({probs})"


def image_files(image: str | None, folder: str | None) -> list[Path]:
    """The files to score; a missing path raises ImageError naming it."""
    if bool(image) == bool(folder):
        raise ConfigError("give exactly one of --image PATH or --folder DIR")
    if image:
        return [Path(image)]
    directory = Path(folder)
    if not directory.is_dir():
        raise ImageError(directory, "folder does not exist")
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


class Predictor:
    """The trained fold models of one task x model, ready to score images."""

    def __init__(self, workdir: str | Path, task: str, model: str | None = None) -> None:
        spec = load_task(task)
        model = model or spec.models[0]
        config = saved_config(workdir, task, model)
        if config is None:
            raise ConfigError(f"{task}/{model} is not trained in {workdir}; run "
                              f"`invoke train --task={task} --model={model}` first")
        self.spec, self.config = spec, config
        folds = [f for f in task_folds(spec)
                 if (run_dir(workdir, task, model, f) / "metrics.json").exists()]
        if not folds:
            raise ConfigError(f"{task}/{model} in {workdir} has no finished fold")
        records = [json.loads((run_dir(workdir, task, model, f) / "config.json").read_text())
                   for f in folds]
        self.stored_size = records[0]["data"]["stored_image_size"]
        self.method = make_method(spec, config, n_train=config.batch_size)
        trainer = Trainer(self.method, config, DataParallel())
        self.states = [trainer.restore_best(run_dir(workdir, task, model, f),
                                            _placeholder_targets(spec, config))
                       for f in folds]
        self.anomaly = [json.loads((run_dir(workdir, task, model, f) / "metrics.json")
                                   .read_text()) for f in folds]
        self._eval = jax.jit(self.method.eval_step)

    def preprocess(self, path: Path) -> np.ndarray:
        """The training preprocessing: float32[S,S,3] for this run's model."""
        image = letterbox(load_rgb(path), self.stored_size)
        return normalize(resize(image, self.config.image_size), self.method.normalization)

    def predict(self, path: Path) -> Prediction:
        x = self.preprocess(path)[None]
        batch = {"image": x, "target": np.zeros((1,), np.int32), "mask": np.ones(1, bool)}
        outputs = [jax.tree.map(np.asarray, self._eval(state, batch)) for state in self.states]
        if self.spec.kind == "anomaly":
            return self._anomaly(path, [o["score"][0] for o in outputs])
        probs = np.mean([o["probs"][0] for o in outputs], axis=0)
        classes = self.spec.classes
        probabilities = {c: float(p) for c, p in zip(classes, probs, strict=True)}
        if self.spec.kind == "multi-label":
            found = [c for c, p in probabilities.items() if p >= 0.5]
            return Prediction(str(path), probabilities, found or ["normal"])
        return Prediction(str(path), probabilities, classes[int(probs.argmax())])

    def _anomaly(self, path: Path, raw_scores: list[float]) -> Prediction:
        # Each fold's score on its own validation-fitted scale, then averaged (one fold here).
        scores = [float(ScoreNormalizer.from_dict(m["normalizer"]).transform(s))
                  for m, s in zip(self.anomaly, raw_scores, strict=True)]
        threshold = float(np.mean([m["threshold"] for m in self.anomaly]))
        score = float(np.mean(scores))
        return Prediction(str(path), score=score, anomalous=score >= threshold,
                          threshold=threshold)


def _placeholder_targets(spec, config: RunConfig) -> np.ndarray:
    """Targets only shape the (restored) class weights; their values are overwritten."""
    if spec.kind == "multi-label":
        return np.zeros((2, len(spec.classes)), np.float32)
    return np.arange(2, dtype=np.int32) % max(2, len(spec.classes))


def predict_files(predictor: Predictor, files: Iterable[Path]):
    """Yield (Prediction | None, error message | None) per file; bad files don't stop the rest."""
    for path in files:
        try:
            yield predictor.predict(path), None
        except ImageError as error:
            yield None, str(error)
