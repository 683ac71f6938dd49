"""Score new photographs with a trained run: per-image class probabilities or anomaly scores.

Any size and aspect (e.g. a square 1411x1411 JPEG with a black border) goes through the
training preprocessing: letterbox to the stored size, resize to the model's size, normalise.
A cross-validated run predicts with its finished fold models together (the task's kind says
how: mean probabilities, or the mean of validation-normalised anomaly scores).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np

from jaxfundus import runs
from jaxfundus.config import ConfigError, load_task
from jaxfundus.data.augment import prepare_batch
from jaxfundus.data.images import ImageError, letterbox, load_rgb
from jaxfundus.data.pipeline import resize
from jaxfundus.methods import make_method
from jaxfundus.methods.kinds import Prediction, kind_of
from jaxfundus.train.loop import Trainer
from jaxfundus.train.mesh import DataParallel

PICTURES = "anomaly-maps"  # default folder for the pictures a method draws, in the run folder


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

    def preprocess(self, path: Path) -> np.ndarray:
        """The training pipeline's image for this run: uint8[S,S,3] (normalised in the step)."""
        return resize(letterbox(load_rgb(path), self.stored_size), self.config.image_size)

    def predict(self, path: Path) -> Prediction:
        """The kind's prediction for one photograph; a method with `prediction_files` (the
        anomaly detectors: an anomaly-map PNG) also writes its pictures into `out` and names
        them in the prediction's `extra`."""
        image = self.preprocess(path)
        batch = {"image": image[None], "mask": np.ones(1, bool)}
        outputs = [jax.tree.map(np.asarray, self._eval(state, batch)) for state in self.states]
        prediction = self.kind.prediction(str(path), self.spec, outputs,
                                          [fold.metrics for fold in self.folds])
        draw = getattr(self.method, "prediction_files", None)
        if draw is None:
            return prediction
        files = draw(self.states, image, self.out, path.stem)
        return dataclasses.replace(prediction, extra={**prediction.extra, **files})


def predict_files(predictor: Predictor, files: Iterable[Path]):
    """Yield (Prediction | None, error message | None) per file; bad files don't stop the rest."""
    for path in files:
        try:
            yield predictor.predict(path), None
        except ImageError as error:
            yield None, str(error)
