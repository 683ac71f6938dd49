"""Training augmentation on the device, inside the jitted step: the CPU only decodes images.

Horizontal flip, rotation within +-10 degrees and brightness/contrast within +-10%, as the
host pipeline did before, but as jnp code: on a GPU or TPU they cost nothing next to the model,
and the input pipeline's workers keep up with the accelerator. Each example's transform is a
pure function of (seed, epoch, position in the epoch), the `example_id` the pipeline attaches,
so a resumed run sees exactly the same augmented images.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxfundus.data.pipeline import normalize

MAX_ROTATION_DEGREES = 10.0
MAX_CONTRAST_CHANGE = 0.1
MAX_BRIGHTNESS_CHANGE = 0.1  # of the full 0-255 range


def example_keys(seed: int, example_ids: jax.Array) -> jax.Array:
    """int32[B,2] (epoch, position) -> one PRNG key per example."""
    base = jax.random.key(seed)
    return jax.vmap(lambda ids: jax.random.fold_in(jax.random.fold_in(base, ids[0]), ids[1]))(
        example_ids)


def augment_images(images: jax.Array, keys: jax.Array,
                   masks: tuple[jax.Array, ...] = ()) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Flip, rotate and change brightness/contrast, one random transform per example.

    images: uint8 or float [B,S,S,C] on the 0-255 scale -> float32 [B,S,S,C] on that scale
    (black outside the rotated image). masks: bool/float [B,S,S] moved by the same flip and
    rotation (nearest neighbour), e.g. a synthetic anomaly's mask.
    """
    def one(image, key, *example_masks):
        flip_key, angle_key, contrast_key, brightness_key = jax.random.split(key, 4)
        flip = jax.random.bernoulli(flip_key)
        angle = jax.random.uniform(angle_key, minval=-MAX_ROTATION_DEGREES,
                                   maxval=MAX_ROTATION_DEGREES)
        coords = _source_coordinates(image.shape[0], flip, angle)
        warped = _bilinear(image.astype(jnp.float32), coords)
        contrast = 1.0 + jax.random.uniform(contrast_key, minval=-MAX_CONTRAST_CHANGE,
                                            maxval=MAX_CONTRAST_CHANGE)
        brightness = 255.0 * jax.random.uniform(brightness_key, minval=-MAX_BRIGHTNESS_CHANGE,
                                                maxval=MAX_BRIGHTNESS_CHANGE)
        mean = warped.mean()
        adjusted = jnp.clip((warped - mean) * contrast + mean + brightness, 0.0, 255.0)
        moved = tuple(_nearest(m, coords) for m in example_masks)
        # Outside the rotated image stays black, as cv2.warpAffine's constant border did.
        inside = _nearest(jnp.ones(image.shape[:2], jnp.float32), coords)
        return adjusted * inside[..., None], moved

    return jax.vmap(one)(images, keys, *masks)


def _source_coordinates(size: int, flip: jax.Array, angle_degrees: jax.Array) -> jax.Array:
    """float32[2,S,S]: for each output pixel, the (row, col) it is read from."""
    centre = (size - 1) / 2.0
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32),
                              jnp.arange(size, dtype=jnp.float32), indexing="ij")
    theta = angle_degrees * (math.pi / 180.0)
    y, x = rows - centre, cols - centre
    # A positive angle turns the picture counter-clockwise (cv2.getRotationMatrix2D's sense):
    # output (y, x) reads the source point turned back by theta.
    source_y = jnp.cos(theta) * y + jnp.sin(theta) * x + centre
    source_x = -jnp.sin(theta) * y + jnp.cos(theta) * x + centre
    source_x = jnp.where(flip, size - 1 - source_x, source_x)
    return jnp.stack([source_y, source_x])


def _gather(image: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """image[rows, cols] for integer-valued float coordinates; zero outside the image."""
    size = image.shape[0]
    valid = (rows >= 0) & (rows <= size - 1) & (cols >= 0) & (cols <= size - 1)
    values = image[jnp.clip(rows, 0, size - 1).astype(jnp.int32),
                   jnp.clip(cols, 0, size - 1).astype(jnp.int32)]
    return jnp.where(valid.reshape(valid.shape + (1,) * (values.ndim - 2)), values,
                     jnp.zeros((), values.dtype))


def _bilinear(image: jax.Array, coords: jax.Array) -> jax.Array:
    """float [S,S,C] sampled at float32[2,S,S] source coordinates, bilinear, zero outside."""
    rows, cols = coords
    top, left = jnp.floor(rows), jnp.floor(cols)
    dy, dx = (rows - top)[..., None], (cols - left)[..., None]
    return (_gather(image, top, left) * (1 - dy) * (1 - dx)
            + _gather(image, top, left + 1) * (1 - dy) * dx
            + _gather(image, top + 1, left) * dy * (1 - dx)
            + _gather(image, top + 1, left + 1) * dy * dx)


def _nearest(plane: jax.Array, coords: jax.Array) -> jax.Array:
    """[S,S] sampled at the nearest source pixel, zero (False) outside; dtype kept."""
    return _gather(plane, jnp.round(coords[0]), jnp.round(coords[1]))


# Batch fields augmented together with `image`: more pictures of the same example (moved and
# recoloured alike) and masks over it (moved alike).
IMAGE_FIELDS = ("image", "anomaly_image")
MASK_FIELDS = ("anomaly_mask",)


def prepare_batch(batch: dict[str, jax.Array], normalization: str,
                  augment_seed: int | None) -> dict[str, jax.Array]:
    """A pipeline batch as a step sees it: uint8 images augmented (when `augment_seed` is given
    and the batch has `example_id`) and normalised to float32; `example_id` is consumed.

    Every field of IMAGE_FIELDS present gets the example's own transform, every MASK_FIELDS
    one the same flip and rotation, so a synthetic anomaly's mask stays on its lesion.
    """
    batch = dict(batch)
    example_ids = batch.pop("example_id", None)
    images = [name for name in IMAGE_FIELDS if name in batch]
    if augment_seed is not None and example_ids is not None:
        keys = example_keys(augment_seed, example_ids)
        masks = [name for name in MASK_FIELDS if name in batch]
        for name in images:
            batch[name], moved = augment_images(batch[name], keys,
                                                masks=tuple(batch[m] for m in masks))
            batch.update(zip(masks, moved, strict=True))
    for name in images:
        batch[name] = normalize(batch[name], normalization)
    return batch
