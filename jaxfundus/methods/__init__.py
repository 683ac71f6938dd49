"""Methods: one module per way of training and scoring a model.

Each module in this package defines a Method class (see `base.Method`) whose `models` names the
models it trains and whose `kinds` names the task kinds it serves; the registry finds them by
scanning the package. Adding a detector is one module here plus its `experiments/<task>.toml`.

    supervised.py  classifiers (simple-cnn, resnet18/50, inception-v3), single- and multi-label
    ganomaly.py    GANomaly, trained on normals
    vae.py         convolutional VAE, trained on normals
    draem.py       DRAEM-style detector, trained on normals with synthetic anomalies painted in
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from jaxfundus.config import ConfigError, RunConfig, TaskSpec
from jaxfundus.methods.kinds import kind_of

_NOT_METHODS = ("base", "kinds", "anomaly")


@functools.cache
def registry() -> dict[str, type]:
    """Model name -> the Method class that trains it, from every module of this package."""
    found: dict[str, type] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name in _NOT_METHODS:
            continue
        method = importlib.import_module(f"{__name__}.{module.name}").METHOD
        for model in method.models:
            if model in found:
                raise RuntimeError(f"model '{model}' is registered by both "
                                   f"{found[model].__name__} and {method.__name__}")
            found[model] = method
    return found


def model_names() -> list[str]:
    return sorted(registry())


def method_class(model: str) -> type:
    """The Method class of a model name; ConfigError listing the known models otherwise."""
    methods = registry()
    if model not in methods:
        raise ConfigError(f"unknown model '{model}'; choose from: {', '.join(model_names())}")
    return methods[model]


def check_fits(spec: TaskSpec, model: str) -> None:
    """ConfigError unless `model` can train task `spec` (its own models, or any model whose
    method serves the task's kind, e.g. resnet18 on a supervised task)."""
    kind = kind_of(spec)
    if model in spec.models:
        return
    fitting = [m for m, method in sorted(registry().items()) if kind.name in method.kinds]
    if model not in fitting:
        raise ConfigError(f"model '{model}' does not fit task '{spec.name}'; its models: "
                          f"{', '.join(spec.models)} (or any {kind.name} model: "
                          f"{', '.join(fitting)})")


def make_method(spec: TaskSpec, config: RunConfig, steps_per_epoch: int = 1):
    """The Method that trains `config.model` on task `spec`; `steps_per_epoch` sizes the
    learning-rate schedule (irrelevant when only restoring for prediction)."""
    check_fits(spec, config.model)
    return method_class(config.model)(spec, config, steps_per_epoch)
