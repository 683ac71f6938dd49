"""Optimizers for training from scratch and for fine-tuning a pretrained backbone.

Both take and return optax transformations over an ``nnx.State`` of Params (as split by
``nnx.split(model, nnx.Param, ...)``); labels and masks are functions of that tree, so an
optimizer is built before any parameters exist.
"""

import jax
import jax.numpy as jnp
import optax

from jaxfundus.models.pretrained import HEAD


def warmup_cosine(peak: float, steps: int) -> optax.Schedule:
    """0 -> ``peak`` over the first 5% of ``steps``, then cosine decay to 1% of the peak."""
    warmup = max(1, steps // 20)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(steps, warmup + 1),
                                              end_value=peak * 0.01)


def make_optimizer(learning_rate: float, weight_decay: float, total_steps: int):
    """AdamW with a 5% linear warm-up and cosine decay to 1% of the peak."""
    return optax.adamw(warmup_cosine(learning_rate, total_steps), weight_decay=weight_decay)


def _names(path) -> tuple:
    return tuple(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
                 for key in path)


def head_labels(params):
    """"head" for every parameter under the classifier's head, "backbone" for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if _names(path)[0] == HEAD else "backbone", params)


def decay_mask(params):
    """True for weight matrices and kernels; False for BatchNorm scale/bias and biases (1-D),
    which weight decay would only pull away from their neutral values."""
    return jax.tree_util.tree_map(lambda value: value.ndim > 1, params)


def make_finetune_optimizer(learning_rate: float, weight_decay: float, total_steps: int, *,
                            backbone_lr_scale: float = 0.1, frozen_steps: int = 0):
    """AdamW for a pretrained backbone with a new head.

    The head (params under ``head``) follows ``warmup_cosine(learning_rate, total_steps)``.
    The backbone gets exactly zero updates for the first ``frozen_steps`` (warm-up epochs with
    the backbone frozen, so the random head does not wreck the pretrained features), then
    ``warmup_cosine(learning_rate * backbone_lr_scale, total_steps - frozen_steps)``. Weight
    decay skips BatchNorm and bias parameters (``decay_mask``).
    """
    if not 0 <= frozen_steps < total_steps:
        raise ValueError(f"frozen_steps {frozen_steps} must be in [0, total_steps={total_steps})")
    backbone = warmup_cosine(learning_rate * backbone_lr_scale, total_steps - frozen_steps)
    head = warmup_cosine(learning_rate, total_steps)
    return optax.multi_transform(
        {"head": optax.adamw(head, weight_decay=weight_decay, mask=decay_mask),
         "backbone": frozen_for(optax.adamw(backbone, weight_decay=weight_decay,
                                            mask=decay_mask), frozen_steps)},
        head_labels)


def frozen_for(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
    """``inner`` with zero updates and its state held for the first ``steps`` updates.

    Holding the state matters for Adam: if its step count ran on while its moments stayed at
    zero, the bias correction would inflate the first updates after thawing several-fold.
    """
    def init(params):
        return jnp.zeros([], jnp.int32), inner.init(params)

    def update(updates, state, params=None):
        count, inner_state = state
        new_updates, new_inner_state = inner.update(updates, inner_state, params)
        frozen = count < steps
        updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
        inner_state = jax.tree.map(lambda old, new: jnp.where(frozen, old, new), inner_state,
                                   new_inner_state)
        return updates, (count + 1, inner_state)

    return optax.GradientTransformation(init, update)
