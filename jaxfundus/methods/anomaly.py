"""What the anomaly detectors share: training on normals, an anomaly map per image, the image
score pooled from it, validation AUROC, and scoring a fold with a threshold fitted on validation,
plus pictures of what the detector sees.

Detectors take inputs scaled to [-1, 1]. Each makes a per-pixel anomaly map (`anomaly_maps`:
|x - x'| for the reconstruction models, the predicted anomaly probability for DRAEM); the same
map is pooled into the image score (config.image_score: mean, or max or top-k after a small
Gaussian smoothing, see jaxfundus.anomaly_scores), drawn in the pictures and compared with
lesion masks. Checkpoints are
chosen by validation AUROC; the score normaliser and decision threshold are fitted on validation
(jaxfundus.evaluate.results) and applied unchanged to test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxfundus.anomaly_scores import POOLINGS, pool_map
from jaxfundus.config import ConfigError
from jaxfundus.data.labels import DISEASES
from jaxfundus.data.pipeline import normalize
from jaxfundus.data.splits import TEST, VAL
from jaxfundus.evaluate.reconstructions import (
    localisation_auroc,
    save_anomaly_map,
    write_reconstructions,
)
from jaxfundus.evaluate.results import anomaly_results
from jaxfundus.methods.base import FoldData
from jaxfundus.methods.kinds import (
    disease_matrix,
    evaluated_heldout,
    evaluated_validation,
    untrained_diseases,
)
from jaxfundus.metrics import roc_auc
from jaxfundus.train.loop import Trainer

ANOMALY_MAP_FILE = "{stem}_anomaly_map.png"  # what `invoke predict` writes per image


class AnomalyMethod:
    """Base of the detectors; subclasses add the networks, the steps and `anomaly_maps`
    (and `reconstruct` when they reconstruct the input)."""

    kinds = ("anomaly",)
    normalization = "tanh"
    example_transform = None
    selection_metric = "auroc"
    image_scores: ClassVar[tuple[str, ...]] = POOLINGS  # the config.image_score values served
    map_title = "|input - reconstruction|"  # what the anomaly map shows, for the pictures
    map_range: ClassVar[tuple[float, float] | None] = None  # fixed colour scale (None: per map)

    def __init__(self, spec, config, steps_per_epoch: int) -> None:
        self.config = config
        if config.image_score not in self.image_scores:
            raise ConfigError(f"image_score = {config.image_score!r}: {config.model} scores "
                              f"images with {', '.join(self.image_scores)}")
        untrained_diseases(config)  # a misspelt disease fails before any training
        self._maps = jax.jit(self.anomaly_maps)

    def example_weights(self, train_targets: np.ndarray) -> None:
        return None  # trained on normals only: nothing to balance

    def anomaly_maps(self, state: Any, images: jax.Array) -> jax.Array:
        """float32[B,S,S,C] in [-1, 1] -> the anomaly map float32[B,S,S], higher = more
        anomalous (subclasses): the one map that is pooled, drawn and compared with masks."""
        raise NotImplementedError

    def image_score(self, state: Any, images: jax.Array) -> jax.Array:
        """float32[B,S,S,C] in [-1, 1] -> float32[B]: the anomaly map pooled by
        config.image_score after a Gaussian smoothing of config.image_score_sigma px (max,
        top-k: the mean of the top config.image_score_k % of pixels; mean: unsmoothed)."""
        config = self.config
        return pool_map(self.anomaly_maps(state, images), config.image_score,
                        config.image_score_k, config.image_score_sigma)

    def eval_step(self, state: Any, batch: dict) -> dict:
        return {"score": self.image_score(state, batch["image"])}

    def validation_metrics(self, outputs: dict, targets: np.ndarray) -> dict:
        scores = outputs["score"]
        both = 0 < targets.sum() < len(targets)
        return {"auroc": roc_auc(targets, scores) if both else float("nan"),
                "normal_score": float(scores[targets == 0].mean()) if (targets == 0).any()
                else float("nan")}

    def score_fold(self, trainer: Trainer, state: Any, fold: FoldData, directory: Path,
                   write_files: bool) -> tuple[pd.DataFrame, dict]:
        val, test_frame, config = fold.data(VAL), fold.frame(TEST), self.config
        predictions, metrics = anomaly_results(
            test_frame, trainer.predict(state, fold.data(TEST))["score"], val.targets,
            trainer.predict(state, val)["score"], criterion=config.threshold_criterion,
            manual_threshold=config.threshold, seed=config.seed)
        metrics.update(image_score=config.image_score, image_score_k=config.image_score_k,
                       image_score_sigma=config.image_score_sigma,
                       auroc_per_disease=auroc_per_disease(
                           predictions["label"].to_numpy(), predictions["score"].to_numpy(),
                           disease_matrix(test_frame, fold.dataset.index)))
        heldout = evaluated_heldout(config, fold.dataset)
        if heldout:
            metrics["heldout_diseases"] = list(heldout)
        validation = evaluated_validation(config, fold.dataset)
        if validation:
            metrics["validation_diseases"] = list(validation)
        size = config.image_size
        metrics.update(localisation_auroc(self, state, fold.dataset, test_frame, size))
        if write_files:
            write_reconstructions(self, state, fold.dataset, test_frame, size,
                                  directory / "reconstructions.png")
        return predictions, metrics

    def prediction_files(self, states: list, image: np.ndarray, out_dir: Path,
                         stem: str) -> dict[str, str]:
        """`invoke predict`'s picture of one image: uint8[S,S,3] (the model's input) beside the
        fold models' mean anomaly map, written to out_dir/<stem>_anomaly_map.png; returns
        {"anomaly_map": its path} for the prediction's output."""
        x = jnp.asarray(normalize(image[None], self.normalization))
        maps = np.mean([np.asarray(self._maps(state, x))[0] for state in states], axis=0)
        path = out_dir / ANOMALY_MAP_FILE.format(stem=stem)
        save_anomaly_map(path, image, maps, self.map_range)
        return {"anomaly_map": str(path)}


def auroc_per_disease(labels: np.ndarray, scores: np.ndarray,
                      diseases: np.ndarray) -> dict[str, float]:
    """Image AUROC of normal images (label 0) against the images that have each disease
    (diseases: 0/1 int[N, len(DISEASES)]), for every disease with at least one image."""
    normal = labels == 0
    found = {}
    for column, name in enumerate(DISEASES):
        has = diseases[:, column] == 1
        if has.any() and normal.any():
            keep = normal | has
            found[name] = roc_auc(has[keep].astype(np.int64), scores[keep])
    return found
