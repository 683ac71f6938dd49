"""Supervised classification step functions (single-label softmax or multi-label sigmoid)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxfundus.metrics import multi_label_metrics, single_label_metrics
from jaxfundus.models.registry import build_classifier


def class_weights(targets: jax.Array, n_classes: int, multi_label: bool) -> jax.Array:
    """Inverse-frequency weights from the training targets (float32[C]); traceable under jit.

    Single-label: n / (C * count_c), so every class contributes equally to the loss.
    Multi-label: per-class positive weight negatives / positives (clipped to [1, 100]).
    """
    targets = jnp.asarray(targets)
    if multi_label:
        positives = targets.sum(0).astype(jnp.float32)
        negatives = targets.shape[0] - positives
        return jnp.clip(negatives / jnp.maximum(positives, 1), 1.0, 100.0)
    counts = jnp.bincount(targets, length=n_classes).astype(jnp.float32)
    return targets.shape[0] / (n_classes * jnp.maximum(counts, 1))


def make_optimizer(learning_rate: float, weight_decay: float, total_steps: int):
    """AdamW with a 5% linear warm-up and cosine decay to 1% of the peak."""
    warmup = max(1, total_steps // 20)
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup,
                                                  max(total_steps, warmup + 1),
                                                  end_value=learning_rate * 0.01)
    return optax.adamw(schedule, weight_decay=weight_decay)


class SupervisedMethod:
    """Classifier training through the shared loop.

    State: {"params", "rest" (batch stats, rng counters), "opt"}: nnx.State / optax pytrees.
    Batch targets: int32[B] class ids (single-label) or float32[B,D] multi-hot (multi-label).
    """

    normalization = "imagenet"

    def __init__(self, model_name: str, classes: tuple[str, ...], *, multi_label: bool,
                 balance: bool, learning_rate: float, weight_decay: float, total_steps: int,
                 dtype: str = "float32") -> None:
        self.model_name = model_name
        self.classes = classes
        self.multi_label = multi_label
        self.selection_metric = "macro_auroc" if multi_label else "balanced_accuracy"
        self._balance = balance
        self._dtype = jnp.dtype(dtype)
        self._optimizer = make_optimizer(learning_rate, weight_decay, total_steps)
        model = nnx.eval_shape(lambda: self.build_model(0))  # graph only, no weights allocated
        model.train()
        self._train_graph = nnx.split(model, nnx.Param, ...)[0]
        model.eval()
        self._eval_graph = nnx.split(model, nnx.Param, ...)[0]

    def build_model(self, seed: int) -> nnx.Module:
        return build_classifier(self.model_name, len(self.classes), rngs=nnx.Rngs(seed),
                                dtype=self._dtype)

    def init_state(self, seed: int, train_targets: jax.Array) -> dict:
        """Fresh weights; class weights come from this fold's training targets when balancing."""
        _, params, rest = nnx.split(self.build_model(seed), nnx.Param, ...)
        if self._balance:
            weights = class_weights(train_targets, len(self.classes), self.multi_label)
        else:
            weights = jnp.ones(len(self.classes), jnp.float32)
        return {"params": params, "rest": rest, "opt": self._optimizer.init(params),
                "class_weights": weights}

    def model(self, state: dict, *, train: bool = False) -> nnx.Module:
        """A live model (eval mode by default) from a state, e.g. for prediction or saliency."""
        graph = self._train_graph if train else self._eval_graph
        return nnx.merge(graph, state["params"], state["rest"])

    def _loss(self, logits: jax.Array, targets: jax.Array, mask: jax.Array,
              weights: jax.Array) -> jax.Array:
        mask = mask.astype(jnp.float32)
        if self.multi_label:
            targets = targets.astype(jnp.float32)
            log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
            per_label = -(weights * targets * log_p + (1 - targets) * log_not_p)
            return (per_label.mean(-1) * mask).sum() / jnp.maximum(mask.sum(), 1)
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        weight = weights[targets] * mask
        return (per_example * weight).sum() / jnp.maximum(weight.sum(), 1e-6)

    def _accuracy(self, logits: jax.Array, targets: jax.Array) -> jax.Array:
        if self.multi_label:
            return ((logits > 0) == (targets > 0.5)).mean()
        return (logits.argmax(-1) == targets).mean()

    def train_step(self, state: dict, batch: dict) -> tuple[dict, dict]:
        model = self.model(state, train=True)

        def loss_fn(model):
            logits = model(batch["image"]).astype(jnp.float32)
            loss = self._loss(logits, batch["target"], batch["mask"], state["class_weights"])
            return loss, logits

        # nnx.value_and_grad differentiates the Params and carries batch-stat/rng updates out.
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt = self._optimizer.update(grads, state["opt"], state["params"])
        new_state = {"params": optax.apply_updates(state["params"], updates),
                     "rest": nnx.state(model, nnx.Not(nnx.Param)), "opt": opt,
                     "class_weights": state["class_weights"]}
        return new_state, {"loss": loss, "accuracy": self._accuracy(logits, batch["target"])}

    def eval_step(self, state: dict, batch: dict) -> dict:
        logits = self.model(state)(batch["image"]).astype(jnp.float32)
        if self.multi_label:
            probs = jax.nn.sigmoid(logits)
            targets = batch["target"].astype(jnp.float32)
            loss = -(targets * jax.nn.log_sigmoid(logits)
                     + (1 - targets) * jax.nn.log_sigmoid(-logits)).mean(-1)
        else:
            probs = jax.nn.softmax(logits)
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


def _finite(value) -> float:
    return float("nan") if value is None else float(value)
