"""Supervised classifiers: single-label softmax or multi-label sigmoid, class-weighted.

A classifier starts from scratch or, with `--init`, with its backbone from a weights file
(`jaxfundus.models.initialization`): then the input normalisation is the one those weights
expect, the backbone learns at `backbone_lr_scale` of the head's rate, and for the first
`freeze_epochs` only the new head trains. Frozen means what Keras' `trainable=False` means:
no updates and BatchNorm in inference mode, so the backbone's ImageNet statistics are used,
not replaced by those of the first fundus batches. Afterwards the backbone's BatchNorm trains
as usual (unlike Keras' fine-tuning guide, which keeps it in inference mode): fundus
photographs are far from ImageNet, and the statistics are what most needs to adapt.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx, struct

from jaxfundus import runs
from jaxfundus.config import RunConfig, TaskSpec
from jaxfundus.data.splits import TEST, VAL
from jaxfundus.evaluate.calibration import TemperatureScaling
from jaxfundus.evaluate.explanations import explain_test_split
from jaxfundus.evaluate.results import (
    calibration_fields,
    supervised_results,
    validation_operating_points,
)
from jaxfundus.evaluate.saliency import GradCam
from jaxfundus.methods.base import FoldData, graphdefs_of, split_variables
from jaxfundus.methods.kinds import MultiLabel, kind_of
from jaxfundus.metrics import (
    MULTI_LABEL_DECISION_THRESHOLD,
    multi_label_metrics,
    single_label_metrics,
)
from jaxfundus.models.initialization import init_provenance, is_pretrained, weights_path
from jaxfundus.models.keras_weights import normalization_for
from jaxfundus.models.pretrained import HEAD, load_backbone
from jaxfundus.models.registry import CLASSIFIERS, build_classifier
from jaxfundus.train.loop import Trainer
from jaxfundus.train.optimizers import make_finetune_optimizer, make_optimizer


@struct.dataclass
class SupervisedState:
    params: nnx.State
    rest: nnx.State  # batch statistics, rng counters
    opt: optax.OptState
    # Optimizer steps taken, int32[], kept only when a frozen warm-up needs to know when it ends
    # (None otherwise, so checkpoints of other runs keep their layout).
    step: jax.Array | None = None


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
    example_transform = None

    def __init__(self, spec: TaskSpec, config: RunConfig, steps_per_epoch: int) -> None:
        self.model_name = config.model
        self.classes = spec.classes
        self.multi_label = isinstance(kind_of(spec), MultiLabel)
        self.selection_metric = "macro_auroc" if self.multi_label else "balanced_accuracy"
        self.title = f"{spec.name} / {config.model}"
        self._seed, self._calibrate, self._image_size = (config.seed, config.calibrate,
                                                         config.image_size)
        self._balance = config.balance == "class-weights"
        self._dtype = jnp.dtype(config.dtype)
        # The input normalisation follows the initialisation: config.json records `init`, so
        # evaluation and prediction normalise as training did without reading the weights.
        self.normalization = normalization_for(config.model, config.init)
        self._init = config.init
        total_steps = config.epochs * steps_per_epoch
        # Frozen warm-up steps: the largest fold's epochs (a smaller fold's ends a few steps
        # into its next epoch).
        self._frozen_steps = 0
        if is_pretrained(config.init):
            self._frozen_steps = config.freeze_epochs * steps_per_epoch
            self._optimizer = make_finetune_optimizer(
                config.learning_rate, config.weight_decay, total_steps,
                backbone_lr_scale=config.backbone_lr_scale, frozen_steps=self._frozen_steps)
        else:
            self._optimizer = make_optimizer(config.learning_rate, config.weight_decay,
                                             total_steps)
        # Traced once for all its graphs: tracing ResNet-50's initialisers takes seconds.
        abstract = nnx.eval_shape(lambda: self.build_model(0))
        self._train_graph, self._eval_graph = graphdefs_of(abstract)
        if self._frozen_steps:
            self._frozen_graph = _frozen_backbone_graph(abstract)

    def build_model(self, seed: int) -> nnx.Module:
        return build_classifier(self.model_name, len(self.classes), rngs=nnx.Rngs(seed),
                                dtype=self._dtype)

    def init_state(self, seed: int) -> SupervisedState:
        params, rest = split_variables(self.build_model(seed))
        step = jnp.zeros((), jnp.int32) if self._frozen_steps else None
        return SupervisedState(params, rest, self._optimizer.init(params), step)

    def start_from(self, state: SupervisedState, sharding: jax.sharding.Sharding
                   ) -> SupervisedState:
        """A fresh `state` with the backbone (Params and BatchNorm statistics) from the weights
        file of `init`, placed with `sharding`; the head stays freshly initialised. Called by
        the loop outside its jitted initialiser (the file's ~100 MB would otherwise become
        constants of the compiled program), and not on resume. WeightsError (one line, naming
        the file and the first variable that does not fit) if the file does not fit."""
        path = weights_path(self.model_name, self._init)
        if path is None:
            return state
        model = nnx.merge(self._train_graph, state.params, state.rest)

        def put(array: np.ndarray, variable: nnx.Variable) -> jax.Array:
            host = np.asarray(array, variable.dtype)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        load_backbone(model, path, model_name=self.model_name, put=put)
        params, rest = split_variables(model)
        return state.replace(params=params, rest=rest)

    def provenance(self) -> dict[str, str | None]:
        """How this run's model started, for config.json and the report: `init` ("scratch" or
        the value used), and for a weights file its name, path, SHA-256 and source."""
        return init_provenance(self.model_name, self._init)

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
        if not self._frozen_steps:
            return self._train_step(state, batch, frozen=False)
        # One program for both phases; only the taken branch runs.
        return jax.lax.cond(state.step < self._frozen_steps,
                            partial(self._train_step, frozen=True),
                            partial(self._train_step, frozen=False), state, batch)

    def _train_step(self, state: SupervisedState, batch: dict, *,
                    frozen: bool) -> tuple[SupervisedState, dict]:
        graph = self._frozen_graph if frozen else self._train_graph
        model = nnx.merge(graph, state.params, state.rest)
        weights = batch.get("weight", jnp.ones(batch["target"].shape, jnp.float32))

        def loss_fn(model):
            if frozen:  # no gradient reaches the backbone, so no backward pass through it
                features = jax.lax.stop_gradient(model.features(batch["image"]))
                logits = model.classify(features).astype(jnp.float32)
            else:
                logits = model(batch["image"]).astype(jnp.float32)
            return self._loss(logits, batch["target"], weights), logits

        # nnx.value_and_grad differentiates the Params and carries batch-stat/rng updates out.
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt = self._optimizer.update(grads, state.opt, state.params)
        step = None if state.step is None else state.step + 1
        new_state = SupervisedState(optax.apply_updates(state.params, updates),
                                    nnx.state(model, nnx.Not(nnx.Param)), opt, step)
        return new_state, {"loss": loss, "accuracy": self._accuracy(logits, batch["target"])}

    def eval_step(self, state: SupervisedState, batch: dict) -> dict:
        """probs and logits float32[B,C]; with targets in the batch (not in prediction) also
        the loss. The logits are what temperature scaling divides."""
        logits = self.model(state)(batch["image"]).astype(jnp.float32)
        probs = jax.nn.sigmoid(logits) if self.multi_label else jax.nn.softmax(logits)
        if "target" not in batch:
            return {"probs": probs, "logits": logits}
        if self.multi_label:
            targets = batch["target"].astype(jnp.float32)
            loss = -(targets * jax.nn.log_sigmoid(logits)
                     + (1 - targets) * jax.nn.log_sigmoid(-logits)).mean(-1)
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["target"])
        return {"probs": probs, "logits": logits, "loss": loss}

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
        """Test predictions and metrics with intervals, calibration (a temperature fitted on
        validation with `calibrate`), two-class operating points chosen on validation, and on
        the primary process Grad-CAM: saliency.png and the pixel AUROC against lesion masks."""
        test_data, val_data = fold.data(TEST), fold.data(VAL)
        test, val = trainer.predict(state, test_data), trainer.predict(state, val_data)
        scaling = (TemperatureScaling.fit(val["logits"], val_data.targets)
                   if self._calibrate else None)
        test_probs = scaling.probs(test["logits"]) if scaling else test["probs"]
        predictions, metrics = supervised_results(fold.frame(TEST), test_probs, self.classes,
                                                  multi_label=self.multi_label, seed=self._seed)
        metrics.update(calibration_fields(test["logits"], test_data.targets, test_probs,
                                          scaling))
        if not self.multi_label and len(self.classes) == 2:
            val_probs = scaling.probs(val["logits"]) if scaling else val["probs"]
            metrics["operating_points"] = validation_operating_points(
                val_data.targets, val_probs[:, 1], test_data.targets, test_probs[:, 1])
        if write_files:
            truth, predicted, predicted_class = self._decisions(test_data.targets, test_probs)
            metrics.update(explain_test_split(
                self.explainer(state), fold.dataset, fold.frame(TEST), test_probs, truth,
                predicted, predicted_class, self.classes, self._image_size, self.normalization,
                f"{self.title}, fold {fold.fold}: test images and where the model looked",
                directory / runs.SALIENCY))
        return predictions, metrics

    def _decisions(self, targets: np.ndarray,
                   probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(truth bool[N,C], predicted bool[N,C], predicted class int[N] or None for
        multi-label) of test targets and probabilities."""
        if self.multi_label:
            return targets > 0.5, probs >= MULTI_LABEL_DECISION_THRESHOLD, None
        eye = np.eye(len(self.classes), dtype=bool)
        predicted_class = probs.argmax(1)
        return eye[targets], eye[predicted_class], predicted_class

    def explainer(self, state: SupervisedState) -> GradCam:
        """Grad-CAM of the model in `state` (on this process's copy of the weights, so one
        process of a multi-process run can draw maps alone)."""
        return GradCam(self.model(jax.tree.map(_process_local, state)))


def _process_local(leaf):
    """A replicated array as the copy on this process's first device (others pass through)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf.addressable_data(0)
    return leaf


def _frozen_backbone_graph(model: nnx.Module) -> nnx.GraphDef:
    """The train-mode graphdef of `model` (abstract; changed in place) with every BatchNorm
    outside the head in inference mode (running statistics used, not updated), for the frozen
    warm-up."""
    model.train()
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm) and path and path[0] != HEAD:
            node.use_running_average = True
    return nnx.split(model, nnx.Param, ...)[0]


def _finite(value) -> float:
    return float("nan") if value is None else float(value)


METHOD = SupervisedMethod
