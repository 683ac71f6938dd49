"""Device-side augmentation: the same transforms the CPU pipeline made, seeded per example."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfundus.data.augment import (
    _bilinear,
    _source_coordinates,
    augment_images,
    example_keys,
    prepare_batch,
)
from jaxfundus.data.pipeline import normalize


def _images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@jax.jit
def _warp(image, flip, angle):
    """The flip-and-rotate resampling of one float32[S,S,C] image (S from the image)."""
    return _bilinear(image, _source_coordinates(image.shape[0], jnp.bool_(flip),
                                                jnp.float32(angle)))


@pytest.mark.parametrize("angle", [7.0, -9.5])
def test_rotation_matches_opencv_warp_affine(angle):
    image = _images(1, 48)[0]
    ours = np.asarray(_warp(jnp.asarray(image, jnp.float32), False, angle))
    matrix = cv2.getRotationMatrix2D((23.5, 23.5), angle, 1.0)
    reference = cv2.warpAffine(image.astype(np.float32), matrix, (48, 48),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    # The border pixels differ in how each treats the half-pixel outside the image.
    assert np.abs(ours - reference)[2:-2, 2:-2].max() < 0.01


def test_flip_without_rotation_mirrors_exactly():
    image = _images(1)[0]
    assert np.array_equal(np.asarray(_warp(jnp.asarray(image, jnp.float32), True, 0.0)),
                          image[:, ::-1].astype(np.float32))


# As in training, augmentation runs jitted (one compilation instead of one per eager op).
_augment = jax.jit(lambda images, ids, seed, masks=(): augment_images(
    images, example_keys(seed, ids), masks=masks))


def test_each_example_id_gives_its_own_reproducible_transform():
    images = jnp.asarray(np.repeat(_images(1), 4, axis=0))
    ids = jnp.asarray([[0, 0], [0, 1], [1, 0], [0, 0]], jnp.int32)
    out = np.asarray(_augment(images, ids, 3)[0])
    assert np.array_equal(out[0], out[3])  # same (epoch, position): same transform
    assert not np.allclose(out[0], out[1]) and not np.allclose(out[0], out[2])
    again = np.asarray(_augment(images, ids[::-1], 3)[0])[::-1]  # the batch order is irrelevant
    np.testing.assert_array_equal(again, out)
    other_seed = np.asarray(_augment(images, ids, 4)[0])
    assert not np.allclose(other_seed, out)
    assert out.min() >= 0 and out.max() <= 255


def test_masks_move_with_their_images():
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 4:12, 20:28] = 255  # a bright square off-centre
    mask = image[..., 0] > 0
    ids = jnp.asarray([[2, 5]], jnp.int32)
    out, (moved,) = _augment(jnp.asarray(image), ids, 0, (jnp.asarray(mask),))
    bright = np.asarray(out)[0].mean(-1) > 127
    moved = np.asarray(moved)[0]
    assert moved.dtype == bool and moved.sum() > 40
    assert (bright & moved).sum() / moved.sum() > 0.85  # the mask still covers the square


def test_prepare_batch_normalises_and_augments_only_with_a_seed():
    images = _images()
    batch = {"image": jnp.asarray(images), "example_id": jnp.zeros((4, 2), jnp.int32),
             "target": jnp.arange(4)}
    plain = prepare_batch(batch, "tanh", augment_seed=None)
    assert "example_id" not in plain and plain["target"] is batch["target"]
    assert np.allclose(np.asarray(plain["image"]), normalize(images, "tanh"), atol=1e-6)
    augmented = jax.jit(lambda batch: prepare_batch(batch, "tanh", augment_seed=0))(batch)
    assert augmented["image"].dtype == jnp.float32
    assert not np.allclose(np.asarray(augmented["image"]), np.asarray(plain["image"]))


def test_prepare_batch_moves_extra_images_and_masks_with_the_image():
    images = _images(2)
    mask = np.zeros((2, 32, 32), bool)
    mask[:, 3:9, 20:28] = True
    marked = images.copy()
    marked[mask] = 255
    batch = {"image": jnp.asarray(images), "anomaly_image": jnp.asarray(marked),
             "anomaly_mask": jnp.asarray(mask),
             "example_id": jnp.asarray([[0, 3], [1, 7]], jnp.int32)}
    out = jax.jit(lambda batch: prepare_batch(batch, "tanh", augment_seed=5))(batch)
    image, anomaly, moved = (np.asarray(out[k]) for k in ("image", "anomaly_image",
                                                           "anomaly_mask"))
    assert moved.dtype == bool and moved.any()
    # Outside the moved mask both pictures got the same transform.
    outside = ~moved & (np.abs(image - anomaly).max(-1) < 10)
    assert outside.sum() / (~moved).sum() > 0.9
    # Inside it the anomaly is brighter than the image (it was painted white).
    assert (anomaly[moved] - image[moved]).mean() > 0.3
