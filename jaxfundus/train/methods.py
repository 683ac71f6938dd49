"""Task kind + model name -> the method (step functions) that trains it."""

from __future__ import annotations

from jaxfundus.config import RunConfig, TaskSpec
from jaxfundus.train.anomaly import GanomalyMethod, VaeMethod
from jaxfundus.train.supervised import SupervisedMethod


def make_method(spec: TaskSpec, config: RunConfig, n_train: int):
    """Build the method for one task x model; `n_train` sizes the learning-rate schedule."""
    total_steps = config.epochs * max(1, n_train // config.batch_size)
    if spec.kind == "anomaly":
        if config.model == "ganomaly":
            return GanomalyMethod(config.image_size, learning_rate=config.learning_rate,
                                  dtype=config.dtype)
        return VaeMethod(config.image_size, learning_rate=config.learning_rate,
                         dtype=config.dtype)
    return SupervisedMethod(config.model, spec.classes, multi_label=spec.kind == "multi-label",
                            balance=config.balance == "class-weights",
                            learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                            total_steps=total_steps, dtype=config.dtype)
