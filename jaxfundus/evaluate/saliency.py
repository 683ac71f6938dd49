"""Grad-CAM saliency maps for classifiers, their overlays on photographs, and their pixel AUROC.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last convolutional block's output
A [h, w, C] by the spatial mean of d logit_k / dA, sums the channels and keeps the positive part:
where the features that raise class k's logit are active. Our classifiers pool those features
globally before the head, so the gradient is the same at every position and Grad-CAM equals
HiResCAM's gradient x activation map: each location's first-order contribution to the logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx
from PIL import Image
from sklearn.metrics import roc_auc_score

# Multi-label models flag a disease at sigmoid >= 0.5 unless given validation thresholds.
DEFAULT_MULTI_LABEL_THRESHOLD = 0.5


class FeatureClassifier(Protocol):
    """A classifier split at its last convolutional block: model(x) == classify(features(x))."""

    def features(self, images: jax.Array) -> jax.Array:
        """float32[B, H, W, 3] -> [B, h, w, C], the last convolutional block before pooling."""
        ...

    def classify(self, features: jax.Array) -> jax.Array:
        """[B, h, w, C] -> float32[B, K] logits."""
        ...


@dataclass(frozen=True)
class SaliencyMaps:
    """One map per image: maps float32[B, H, W] in [0, 1] for class class_ids int32[B];
    logits float32[B, K] of the same forward pass."""

    maps: np.ndarray
    class_ids: np.ndarray
    logits: np.ndarray


@dataclass(frozen=True)
class ClassSaliencyMaps:
    """A map per image and class: maps float32[B, K, H, W] in [0, 1]; selected bool[B, K] marks
    the classes flagged (sigmoid(logit) >= threshold); logits float32[B, K]."""

    maps: np.ndarray
    selected: np.ndarray
    logits: np.ndarray


def _class_activation_maps(model: FeatureClassifier, images: jax.Array):
    """(logits float32[B, K], Grad-CAM maps float32[B, K, h, w] before upsampling/normalising)."""
    features = model.features(images).astype(jnp.float32)
    logits, pullback = jax.vjp(model.classify, features)
    batch, n_classes = logits.shape
    # One pullback per class k of the cotangent "logit k of every image": d logit_k / d features.
    one_hot = jnp.broadcast_to(jnp.eye(n_classes, dtype=logits.dtype)[:, None, :],
                               (n_classes, batch, n_classes))
    (gradients,) = jax.vmap(pullback)(one_hot)  # [K, B, h, w, C]
    channel_weights = gradients.mean(axis=(2, 3))  # [K, B, C]
    cams = jnp.einsum("bhwc,kbc->bkhw", features, channel_weights)
    return logits, jax.nn.relu(cams)


def _upsample_and_normalise(cams: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[..., h, w] -> [..., H, W] bilinear, each map divided by its maximum (all-zero stays 0)."""
    maps = jax.image.resize(cams, (*cams.shape[:-2], *size), method="bilinear")
    peak = maps.max(axis=(-2, -1), keepdims=True)
    return jnp.where(peak > 0, maps / jnp.where(peak > 0, peak, 1.0), 0.0)


class GradCam:
    """Jitted Grad-CAM for a FeatureClassifier (nnx module).

    Works on an eval-mode copy of the model's current weights (BatchNorm running statistics, no
    dropout), taken at construction; build a new GradCam after further training. Compiles once
    per input shape.
    """

    def __init__(self, model: nnx.Module):
        graphdef, state = nnx.split(model)
        inference = nnx.merge(graphdef, state, copy=True)
        inference.eval()
        graphdef, self._state = nnx.split(inference)

        def chosen(state, images, class_ids):
            logits, cams = _class_activation_maps(nnx.merge(graphdef, state), images)
            if class_ids is None:
                class_ids = logits.argmax(axis=1).astype(jnp.int32)
            cams = jnp.take_along_axis(cams, class_ids[:, None, None, None], axis=1)[:, 0]
            return _upsample_and_normalise(cams, images.shape[1:3]), class_ids, logits

        def every_class(state, images):
            logits, cams = _class_activation_maps(nnx.merge(graphdef, state), images)
            return _upsample_and_normalise(cams, images.shape[1:3]), logits

        self._chosen = jax.jit(chosen)
        self._every_class = jax.jit(every_class)

    def __call__(self, images, class_index=None) -> SaliencyMaps:
        """Maps of images float32[B, H, W, 3] for one class per image.

        class_index: None for each image's predicted class (argmax of the logits), an int for
        that class in every image, or int[B] for one class per image.
        """
        images = jnp.asarray(images, jnp.float32)
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, channels], got shape {images.shape}")
        class_ids = None
        if class_index is not None:
            class_ids = jnp.broadcast_to(jnp.asarray(class_index, jnp.int32), images.shape[:1])
        maps, class_ids, logits = self._chosen(self._state, images, class_ids)
        n_classes = logits.shape[1]
        ids = np.asarray(class_ids)
        if ids.min() < 0 or ids.max() >= n_classes:
            raise ValueError(f"class_index {class_index!r} outside the model's {n_classes} classes")
        return SaliencyMaps(np.asarray(maps), ids, np.asarray(logits))

    def flagged_classes(self, images,
                        thresholds=DEFAULT_MULTI_LABEL_THRESHOLD) -> ClassSaliencyMaps:
        """Multi-label: maps for every class, and which classes are flagged in each image.

        images float32[B, H, W, 3]; thresholds: one probability, or float[K] (e.g. per-class
        thresholds chosen on validation); a class is flagged when sigmoid(logit) >= threshold.
        """
        images = jnp.asarray(images, jnp.float32)
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, channels], got shape {images.shape}")
        maps, logits = self._every_class(self._state, images)
        logits = np.asarray(logits)
        selected = 1.0 / (1.0 + np.exp(-logits.astype(np.float64))) >= np.asarray(thresholds)
        return ClassSaliencyMaps(np.asarray(maps), selected, logits)


# --------------------------------------------------------------------------- overlays


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"image must be [H, W], [H, W, 1] or [H, W, 3], got shape {image.shape}")


def overlay(image, saliency, *, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """uint8[H, W, 3]: image (uint8 [H, W] or [H, W, 3]) with saliency float[h, w] in [0, 1]
    drawn over it in `colormap`. The map is resized to the image (bilinear) when its size
    differs; its opacity grows with its value, so unimportant regions show the photograph."""
    rgb = _as_rgb(image)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim != 2:
        raise ValueError(f"saliency must be one map [h, w], got shape {saliency.shape}")
    if saliency.shape != rgb.shape[:2]:
        resized = Image.fromarray(saliency).resize(rgb.shape[1::-1], Image.Resampling.BILINEAR)
        saliency = np.asarray(resized)
    saliency = np.clip(saliency, 0.0, 1.0)
    heat = matplotlib.colormaps[colormap](saliency)[..., :3] * 255.0
    opacity = alpha * saliency[..., None]
    return np.round((1.0 - opacity) * rgb + opacity * heat).astype(np.uint8)


def save_overlay(path, image, saliency, **overlay_options) -> Path:
    """Writes `overlay(image, saliency, ...)` to path as a PNG (parents created); returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, saliency, **overlay_options)).save(path, format="PNG")
    return path


def saliency_pixel_auroc(maps, masks) -> float:
    """AUROC of map values as a per-pixel lesion detector, pooled over all pixels of all images.

    maps float[..., H, W]; masks of the same shape, nonzero = lesion (bool, {0, 1} or {0, 255}
    as the generator writes them). 0.5 is chance. NaN when the masks have no lesion pixels or
    nothing else.
    """
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ; resize the masks to "
                         f"the maps first")
    lesion = masks.ravel() != 0
    if lesion.all() or not lesion.any():
        return float("nan")
    return float(roc_auc_score(lesion, maps.ravel()))
