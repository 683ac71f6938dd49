"""What the anomaly detectors share: training on normals, validation AUROC, and scoring a fold
with a threshold fitted on validation, plus pictures of what the detector sees.

Detectors take inputs scaled to [-1, 1] and score each image (higher = more anomalous).
Checkpoints are chosen by validation AUROC; the score normaliser and decision threshold are
fitted on validation (jaxfundus.evaluate.results) and applied unchanged to test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxfundus.data.splits import TEST, VAL
from jaxfundus.evaluate.reconstructions import localisation_auroc, write_reconstructions
from jaxfundus.evaluate.results import anomaly_results
from jaxfundus.methods.base import FoldData
from jaxfundus.metrics import roc_auc
from jaxfundus.train.loop import Trainer


class AnomalyMethod:
    """Base of the detectors; subclasses add the networks, steps and `reconstruct`."""

    kinds = ("anomaly",)
    normalization = "tanh"
    example_transform = None
    selection_metric = "auroc"

    def __init__(self, spec, config, steps_per_epoch: int) -> None:
        self.config = config

    def example_weights(self, train_targets: np.ndarray) -> None:
        return None  # trained on normals only: nothing to balance

    def validation_metrics(self, outputs: dict, targets: np.ndarray) -> dict:
        scores = outputs["score"]
        both = 0 < targets.sum() < len(targets)
        return {"auroc": roc_auc(targets, scores) if both else float("nan"),
                "normal_score": float(scores[targets == 0].mean()) if (targets == 0).any()
                else float("nan")}

    def score_fold(self, trainer: Trainer, state: Any, fold: FoldData, directory: Path,
                   write_files: bool) -> tuple[pd.DataFrame, dict]:
        val = fold.data(VAL)
        predictions, metrics = anomaly_results(
            fold.frame(TEST), trainer.predict(state, fold.data(TEST))["score"], val.targets,
            trainer.predict(state, val)["score"], criterion=self.config.threshold_criterion,
            manual_threshold=self.config.threshold, seed=self.config.seed)
        test_frame, size = fold.frame(TEST), self.config.image_size
        metrics.update(localisation_auroc(self, state, fold.dataset, test_frame, size))
        if write_files:
            write_reconstructions(self, state, fold.dataset, test_frame, size,
                                  directory / "reconstructions.png")
        return predictions, metrics
