"""Model names -> constructors, for configs and the command line."""

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from jaxfundus.models.inception_v3 import InceptionV3
from jaxfundus.models.resnet import resnet18, resnet50
from jaxfundus.models.simple_cnn import SimpleCNN

# Each constructor: (num_outputs, *, rngs, dtype) -> module mapping float32[B,H,W,3] to
# float32[B, num_outputs] logits.
CLASSIFIERS: dict[str, Callable[..., nnx.Module]] = {
    "simple-cnn": SimpleCNN,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "inception-v3": InceptionV3,
}
# Reconstruction models (jaxfundus.models.ganomaly / .vae); built by their own trainers.
ANOMALY_MODEL_NAMES = ["ganomaly", "vae"]
MODEL_NAMES = [*CLASSIFIERS, *ANOMALY_MODEL_NAMES]


def build_classifier(
    name: str, num_outputs: int, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32
) -> nnx.Module:
    """Build the classifier registered as ``name``; ValueError for an unknown name."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name](num_outputs, rngs=rngs, dtype=dtype)
