"""Supervised classifiers: single-label softmax or multi-label sigmoid, class-weighted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx, struct

from jaxfundus.config import RunConfig, TaskSpec
from jaxfundus.data.splits import TEST
from jaxfundus.evaluate.results import supervised_results
from jaxfundus.methods.base import FoldData, graphdefs, split_variables
from jaxfundus.methods.kinds import MultiLabel, kind_of
from jaxfundus.metrics import multi_label_metrics, single_label_metrics
from jaxfundus.models.registry import CLASSIFIERS, build_classifier
from jaxfundus.train.loop import Trainer
from jaxfundus.train.optimizers import make_optimizer


@struct.dataclass
class SupervisedState:
    params: nnx.State
    rest: nnx.State  # batch statistics, rng counters
    opt: optax.OptState


def class_weights(targets: np.ndarray, n_classes: int, multi_label: bool) -> np.ndarray:
    """Inverse-frequency weights from the training targets: float32[C].

    Single-label: n / (C * count_c), so every class contributes equally to the loss.
    Multi-label: per-class positive weight negatives / positives (clipped to [1, 100]).
    """
    targets = np.asarray(targets)
    if multi_label:
        positives = targets.sum(0).astype(np.float32)
        negatives = targets.shape[0] - positives
        return np.clip(negatives / np.maximum(positives, 1), 1.0, 100.0).astype(np.float32)
    counts = np.bincount(targets, minlength=n_classes).astype(np.float32)
    return (targets.shape[0] / (n_classes * np.maximum(counts, 1))).astype(np.float32)


class SupervisedMethod:
    """Classifier training through the shared loop.

    Batch targets: int32[B] class ids (single-label) or float32[B,D] multi-hot (multi-label);
    `weight`: the loss weight of each example (float32[B]) or of each label (float32[B,D]).
    """

    models = tuple(CLASSIFIERS)
    kinds = ("single-label", "multi-label")
    default_task = "five-rare"
    normalization = "imagenet"
    example_transform = None

    def __init__(self, spec: TaskSpec, config: RunConfig, steps_per_epoch: int) -> None:
        self.model_name = config.model
        self.classes = spec.classes
        self.multi_label = isinstance(kind_of(spec), MultiLabel)
        self.selection_metric = "macro_auroc" if self.multi_label else "balanced_accuracy"
        self._balance = config.balance == "class-weights"
        self._dtype = jnp.dtype(config.dtype)
        self._optimizer = make_optimizer(config.learning_rate, config.weight_decay,
                                         config.epochs * steps_per_epoch)
        self._train_graph, self._eval_graph = graphdefs(lambda: self.build_model(0))

    def build_model(self, seed: int) -> nnx.Module:
        return build_classifier(self.model_name, len(self.classes), rngs=nnx.Rngs(seed),
                                dtype=self._dtype)

    def init_state(self, seed: int) -> SupervisedState:
        params, rest = split_variables(self.build_model(seed))
        return SupervisedState(params, rest, self._optimizer.init(params))

    def example_weights(self, train_targets: np.ndarray) -> np.ndarray | None:
        """Per-example (single-label) or per-label (multi-label) loss weights: inverse class
        frequency of this fold's training targets; None without balancing."""
        if not self._balance:
            return None
        weights = class_weights(train_targets, len(self.classes), self.multi_label)
        if self.multi_label:  # the positive-class weight on positive labels, 1 on negatives
            return np.where(train_targets > 0.5, weights[None, :], 1.0).astype(np.float32)
        return weights[train_targets]

    def model(self, state: SupervisedState, *, train: bool = False) -> nnx.Module:
        """A live model (eval mode by default) from a state, e.g. for prediction or saliency."""
        graph = self._train_graph if train else self._eval_graph
        return nnx.merge(graph, state.params, state.rest)

    def _loss(self, logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
        if self.multi_label:
            targets = targets.astype(jnp.float32)
            log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
            per_label = -weights * (targets * log_p + (1 - targets) * log_not_p)
            return per_label.mean(-1).sum() / logits.shape[0]
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1e-6)

    def _accuracy(self, logits: jax.Array, targets: jax.Array) -> jax.Array:
        if self.multi_label:
            return ((logits > 0) == (targets > 0.5)).mean()
        return (logits.argmax(-1) == targets).mean()

    def train_step(self, state: SupervisedState, batch: dict) -> tuple[SupervisedState, dict]:
        model = self.model(state, train=True)
        weights = batch.get("weight", jnp.ones(batch["target"].shape, jnp.float32))

        def loss_fn(model):
            logits = model(batch["image"]).astype(jnp.float32)
            return self._loss(logits, batch["target"], weights), logits

        # nnx.value_and_grad differentiates the Params and carries batch-stat/rng updates out.
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt = self._optimizer.update(grads, state.opt, state.params)
        new_state = SupervisedState(optax.apply_updates(state.params, updates),
                                    nnx.state(model, nnx.Not(nnx.Param)), opt)
        return new_state, {"loss": loss, "accuracy": self._accuracy(logits, batch["target"])}

    def eval_step(self, state: SupervisedState, batch: dict) -> dict:
        """probs float32[B,C]; with targets in the batch (not in prediction) also the loss."""
        logits = self.model(state)(batch["image"]).astype(jnp.float32)
        probs = jax.nn.sigmoid(logits) if self.multi_label else jax.nn.softmax(logits)
        if "target" not in batch:
            return {"probs": probs}
        if self.multi_label:
            targets = batch["target"].astype(jnp.float32)
            loss = -(targets * jax.nn.log_sigmoid(logits)
                     + (1 - targets) * jax.nn.log_sigmoid(-logits)).mean(-1)
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["target"])
        return {"probs": probs, "loss": loss}

    def validation_metrics(self, outputs: dict, targets: np.ndarray) -> dict:
        if self.multi_label:
            metrics = multi_label_metrics(targets, outputs["probs"], list(self.classes))
            keep = ("macro_auroc", "top1_accuracy", "exact_match_accuracy")
        else:
            metrics = single_label_metrics(targets, outputs["probs"], list(self.classes))
            keep = ("accuracy", "balanced_accuracy", "macro_auroc")
        result = {k: _finite(metrics[k]) for k in keep}
        result["loss"] = float(outputs["loss"].mean())
        return result

    def score_fold(self, trainer: Trainer, state: Any, fold: FoldData, directory: Path,
                   write_files: bool) -> tuple[pd.DataFrame, dict]:
        outputs = trainer.predict(state, fold.data(TEST))
        return supervised_results(fold.frame(TEST), outputs["probs"], self.classes,
                                  multi_label=self.multi_label)


def _finite(value) -> float:
    return float("nan") if value is None else float(value)


METHOD = SupervisedMethod
