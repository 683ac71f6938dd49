"""Score new photographs with a trained run: per-image class probabilities or anomaly scores,
and optionally where the model looked (Grad-CAM overlays, `--explain`).

Any size and aspect (e.g. a square 1411x1411 JPEG with a black border) goes through the
training preprocessing: letterbox to the stored size, resize to the model's size, normalise.
A cross-validated run predicts with its finished fold models together (the task's kind says
how: mean probabilities, or the mean of validation-normalised anomaly scores). A run trained
with `calibrate` predicts with each fold's validation-fitted temperature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from jaxfundus import runs
from jaxfundus.config import ConfigError, load_task
from jaxfundus.data.augment import prepare_batch
from jaxfundus.data.images import ImageError, letterbox, load_rgb
from jaxfundus.data.pipeline import normalize, resize
from jaxfundus.evaluate.calibration import TemperatureScaling
from jaxfundus.evaluate.saliency import save_overlay
from jaxfundus.methods import make_method
from jaxfundus.methods.kinds import Prediction, kind_of
from jaxfundus.train.loop import Trainer
from jaxfundus.train.mesh import DataParallel

# Default --out folders inside the run's folder: Grad-CAM overlays (--explain), and the
# pictures a method draws per image (anomaly maps).
EXPLANATIONS = "explanations"
PICTURES = "anomaly-maps"


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
    """The finished fold models of one task x model, ready to score images."""

    def __init__(self, workdir: str | Path, task: str, model: str | None = None,
                 out: str | Path | None = None) -> None:
        spec = load_task(task)
        model = model or spec.models[0]
        config = runs.saved_config(workdir, task, model)
        if config is None:
            raise ConfigError(f"{task}/{model} is not trained in {workdir}; run "
                              f"`invoke train --task={task} --model={model}` first")
        folds = [fold for n in runs.fold_numbers(spec)
                 if (fold := runs.read_fold(workdir, task, model, n)).finished]
        if not folds:
            raise ConfigError(f"{task}/{model} in {workdir} has no finished fold")
        self.spec, self.config, self.folds = spec, config, folds
        self.directory = runs.run_directory(workdir, task, model)
        # Where methods that draw per image (anomaly maps) write their pictures.
        self.out = Path(out) if out else self.directory / PICTURES
        self.kind = kind_of(spec)
        self.stored_size = folds[0].config["data"]["stored_image_size"]
        self.method = make_method(spec, config)
        trainer = Trainer(self.method, config, DataParallel())
        self.states = [trainer.restore_best(fold.directory) for fold in folds]
        self._eval = jax.jit(lambda state, batch: self.method.eval_step(
            state, prepare_batch(batch, self.method.normalization, augment_seed=None)))
        self._explainers: list | None = None

    def preprocess(self, path: Path) -> np.ndarray:
        """The training pipeline's image for this run: uint8[S,S,3] (normalised in the step)."""
        return self._stored(load_rgb(path))

    def _stored(self, photo: np.ndarray) -> np.ndarray:
        return resize(letterbox(photo, self.stored_size), self.config.image_size)

    def predict(self, path: Path) -> Prediction:
        """The kind's prediction for one photograph; a method with `prediction_files` (the
        anomaly detectors: an anomaly-map PNG) also writes its pictures into `out` and names
        them in the prediction's `extra`."""
        image = self.preprocess(path)
        batch = {"image": image[None], "mask": np.ones(1, bool)}
        outputs = [_calibrated(jax.tree.map(np.asarray, self._eval(state, batch)), fold.metrics)
                   for state, fold in zip(self.states, self.folds, strict=True)]
        prediction = self.kind.prediction(str(path), self.spec, outputs,
                                          [fold.metrics for fold in self.folds])
        draw = getattr(self.method, "prediction_files", None)
        if draw is None:
            return prediction
        files = draw(self.states, image, self.out, path.stem)
        return dataclasses.replace(prediction, extra={**prediction.extra, **files})

    def explain(self, path: Path, prediction: Prediction, out: Path) -> Prediction:
        """Write `out`/<stem>_gradcam_<class>.png per explained class (the predicted class; for
        multi-label every flagged disease, or the likeliest when none is): the photograph at its
        own size with the fold models' mean Grad-CAM map over it. The prediction's `extra`
        names the files (saliency_maps: class -> path)."""
        photo = load_rgb(path)
        image = np.asarray(normalize(self._stored(photo)[None], self.method.normalization),
                           np.float32)
        files = {}
        for name in self._explained_classes(prediction):
            index = self.spec.classes.index(name)
            maps = np.mean([explainer(image, index).maps[0] for explainer in self.explainers()],
                           axis=0)
            peak = maps.max()
            heat = unletterbox(maps / peak if peak > 0 else maps, photo.shape[:2])
            files[name] = str(save_overlay(out / f"{path.stem}_gradcam_{name}.png", photo, heat))
        return dataclasses.replace(prediction, extra={**prediction.extra, "saliency_maps": files})

    def explainers(self) -> list:
        """One saliency-map maker per fold model (the method says how); ConfigError for a
        method without saliency maps."""
        if self._explainers is None:
            if not hasattr(self.method, "explainer"):
                raise ConfigError(f"--explain: {self.config.model} ({self.spec.kind}) has no "
                                  "saliency maps; they exist for the supervised classifiers")
            self._explainers = [self.method.explainer(state) for state in self.states]
        return self._explainers

    def _explained_classes(self, prediction: Prediction) -> list[str]:
        answer = prediction.prediction
        names = [n for n in ([answer] if isinstance(answer, str) else answer or [])
                 if n in self.spec.classes]
        if names or not prediction.probabilities:
            return names
        return [max(prediction.probabilities, key=prediction.probabilities.get)]


def unletterbox(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A square map float[S, S] of a letterboxed image -> float32[H, W] over the original
    photograph of `shape` (the letterbox's black bars cut off)."""
    height, width = shape
    side = max(height, width)
    square = Image.fromarray(np.asarray(saliency, np.float32)).resize(
        (side, side), Image.Resampling.BILINEAR)
    top, left = (side - height) // 2, (side - width) // 2
    return np.asarray(square)[top:top + height, left:left + width]


def _calibrated(outputs: dict[str, np.ndarray], metrics: dict) -> dict[str, np.ndarray]:
    """A fold's outputs with its validation-fitted temperature applied (when it has one)."""
    if "calibration" not in metrics:
        return outputs
    scaling = TemperatureScaling.from_dict(metrics["calibration"])
    return {**outputs, "probs": scaling.probs(outputs["logits"])}


def predict_files(predictor: Predictor, files: Iterable[Path], explain_to: Path | None = None):
    """Yield (Prediction | None, error message | None) per file; bad files don't stop the rest.

    With `explain_to`, each prediction also writes its Grad-CAM overlays there."""
    for path in files:
        try:
            prediction = predictor.predict(path)
            if explain_to is not None:
                prediction = predictor.explain(path, prediction, explain_to)
            yield prediction, None
        except ImageError as error:
            yield None, str(error)
