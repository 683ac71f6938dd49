"""`invoke weights`: Keras' ImageNet weights -> a project weights file, checked against Keras.

Converting needs only h5py; fetching Keras' file (when it is not already in ``~/.keras/models``)
and ``--check`` need TensorFlow (``pip install tensorflow-cpu``).
"""

import functools
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxfundus.data.pipeline import normalize
from jaxfundus.models.keras_weights import KERAS_MODELS, convert_keras_weights, normalization_for
from jaxfundus.models.pretrained import (
    WeightsError,
    file_sha256,
    load_backbone,
    save_backbone,
    weights_file,
)
from jaxfundus.models.registry import build_classifier

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"
# (file name in ~/.keras/models, URL, md5) exactly as keras.applications fetches them.
KERAS_FILES = {
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 f"{_KERAS_URL}/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "4d473c1dd8becc155b73f8504c6f6626"),
    "inception-v3": ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     f"{_KERAS_URL}/inception_v3/"
                     "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "bcbd6486424b2319ff4ef7d526e38f63"),
}
KERAS_APPLICATIONS = {"resnet50": "ResNet50", "inception-v3": "InceptionV3"}
CHECK_IMAGE_SIZES = {"resnet50": 224, "inception-v3": 299}  # the sizes the weights were trained at


def keras_weights_path(model_name: str) -> Path:
    """Where keras.applications keeps the model's notop ImageNet file ($KERAS_HOME/models)."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return home / "models" / KERAS_FILES[_known(model_name)][0]


def _known(model_name: str) -> str:
    if model_name not in KERAS_MODELS:
        raise WeightsError(f"no ImageNet weights for {model_name!r}; choose from: "
                           f"{', '.join(KERAS_MODELS)}")
    return model_name


def _import_keras(purpose: str):
    try:
        import keras
    except ImportError:
        raise WeightsError(f"{purpose} needs TensorFlow: pip install tensorflow-cpu") from None
    return keras


def fetch_keras_weights(model_name: str) -> Path:
    """Keras' notop ImageNet weights file for ``model_name``: the copy in ~/.keras/models when
    there, else downloaded by Keras. WeightsError saying what to install or download when
    neither works."""
    path = keras_weights_path(model_name)
    if path.is_file():
        return path
    name, url, md5 = KERAS_FILES[model_name]
    manual = f"download {url} to {path} (or pass --source=FILE)"
    try:
        import keras
    except ImportError:
        raise WeightsError(f"{path} is absent; install TensorFlow (pip install tensorflow-cpu) "
                           f"to fetch it, or {manual}") from None
    try:
        return Path(keras.utils.get_file(name, url, cache_subdir="models", file_hash=md5))
    except Exception as error:  # get_file raises a bare Exception, the network error inside
        raise WeightsError(f"could not download {name} ({error.__context__ or error}); "
                           f"{manual}") from None


def pooled_features(model: nnx.Module, images: np.ndarray) -> np.ndarray:
    """ResNet's or InceptionV3's globally pooled features: float32[B,H,W,3] -> float32[B,F].

    Uses the model in the mode it is in (call ``model.eval()`` first for eval mode).
    """
    graphdef, state = nnx.split(model)
    return np.asarray(_pooled_features(graphdef, state, images))


class _Identity(nnx.Module):
    def __call__(self, x):
        return x


@functools.partial(jax.jit, static_argnums=0)
def _pooled_features(graphdef, state, images):
    # TODO(lead): use jnp.mean(model.features(images), axis=(1, 2)) once models have features().
    # Until then: the ResNets' and InceptionV3's head is a Linear on the pooled features, so a
    # copy of the model whose head is the identity returns exactly those features.
    model = nnx.merge(graphdef, state)
    model.head = _Identity()
    return model(images)


def check_images(model_name: str, *, image_size: int, batch_size: int = 2,
                 seed: int = 0) -> np.ndarray:
    """Seeded random photographs, normalised as the ImageNet weights expect: float32[B,S,S,3]."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8)
    return normalize(images, normalization_for(model_name, "imagenet"))


def keras_pooled_features(model_name: str, source: Path, images: np.ndarray) -> np.ndarray:
    """Keras' own model (keras.applications, weights loaded by Keras from ``source``) in
    inference mode on float32[B,S,S,3] -> float32[B,F] average-pooled features."""
    keras = _import_keras("--check")
    build = getattr(keras.applications, KERAS_APPLICATIONS[_known(model_name)])
    model = build(weights=str(source), include_top=False, pooling="avg",
                  input_shape=images.shape[1:])
    return np.asarray(model(images, training=False))


def project_pooled_features(model_name: str, weights: Path, images: np.ndarray) -> np.ndarray:
    """Our model with the backbone from a project weights file, in eval mode: [B,S,S,3] -> [B,F]."""
    model = build_classifier(model_name, 1, rngs=nnx.Rngs(0))
    load_backbone(model, weights, model_name=model_name)
    model.eval()
    # Full float32 matmuls: GPUs default to TF32 (~1e-3 relative), which would hide a real
    # conversion error of that size; the check is about the weights, not the arithmetic.
    with jax.default_matmul_precision("highest"):
        return pooled_features(model, images)


def max_abs_diff_against_keras(model_name: str, source: Path, weights: Path, *,
                               image_size: int | None = None, batch_size: int = 2,
                               seed: int = 0) -> float:
    """Largest |ours - Keras| over the pooled features of the same seeded input (eval mode),
    Keras reading ``source`` itself and ours reading the converted ``weights``."""
    images = check_images(model_name, image_size=image_size or CHECK_IMAGE_SIZES[model_name],
                          batch_size=batch_size, seed=seed)
    ours = project_pooled_features(model_name, weights, images)
    theirs = keras_pooled_features(model_name, source, images)
    return float(np.max(np.abs(ours - theirs)))


def convert_weights(model: str, source: str | Path | None = None, check: bool = False, *,
                    out: Path | None = None, check_image_size: int | None = None,
                    log: Callable[[str], None] = print) -> Path:
    """Convert a Keras weights file (default: Keras' ImageNet file, fetched if absent) into the
    project weights file ``out`` (default: ``weights_file(model)`` in the cache); returns it.

    With ``check``, the last line logged is ``max_abs_diff=<value>``: ours against Keras' own
    model on the same seeded input (needs TensorFlow), of ``check_image_size`` px (default: the
    size the ImageNet weights were trained at).
    """
    source = Path(source) if source else fetch_keras_weights(_known(model))
    arrays = convert_keras_weights(model, source)
    path = save_backbone(arrays, out or weights_file(model), model_name=model,
                         source=f"{source.name} sha256:{file_sha256(source)}")
    values = sum(array.size for array in arrays.values())
    log(f"wrote {path}: {len(arrays)} arrays, {values / 1e6:.1f}M values, from {source}")
    if check:
        diff = max_abs_diff_against_keras(model, source, path, image_size=check_image_size)
        log(f"max_abs_diff={diff:.3g}")
    return path
