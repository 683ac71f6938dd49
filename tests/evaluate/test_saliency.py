"""Grad-CAM finds what tiny models with a known answer look at; overlays and pixel AUROC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from sklearn.metrics import roc_auc_score

from jaxfundus.evaluate.saliency import (
    GradCam,
    overlay,
    saliency_pixel_auroc,
    save_overlay,
)

SIZE = 32  # images are SIZE x SIZE; features are SIZE/4 x SIZE/4
QUADRANTS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0),
             "bottom-right": (1, 1)}


def rngs(seed: int = 0) -> nnx.Rngs:
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def quadrant_mask(row: int, col: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    half = size // 2
    mask[row * half:(row + 1) * half, col * half:(col + 1) * half] = True
    return mask


class QuadrantModel(nnx.Module):
    """Sees one quadrant of the image only. Logit 0 = mean of its positive conv features
    (evidence for class 0), logit 1 = minus that (the same features count against class 1)."""

    def __init__(self, row: int, col: int, *, rngs: nnx.Rngs):
        self.row, self.col = row, col
        self.conv = nnx.Conv(3, 4, (3, 3), use_bias=False, rngs=rngs)

    def features(self, x):
        visible = jnp.asarray(quadrant_mask(self.row, self.col, x.shape[1]))[None, :, :, None]
        a = nnx.relu(self.conv(x * visible))
        return nnx.avg_pool(a, (4, 4), strides=(4, 4))

    def classify(self, features):
        evidence = features.mean(axis=(1, 2)).sum(axis=1)
        return jnp.stack([evidence, -evidence], axis=1)

    def __call__(self, x):
        return self.classify(self.features(x))


class ColourModel(nnx.Module):
    """Class 0 = red, class 1 = green: a 1x1 conv with fixed weights, global pooling, a bias."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 2, (1, 1), use_bias=False, rngs=rngs)
        self.conv.kernel[...] = jnp.array([[[[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]]]])

    def features(self, x):
        return nnx.avg_pool(nnx.relu(self.conv(x)), (4, 4), strides=(4, 4))

    def classify(self, features):
        return features.mean(axis=(1, 2)) - 0.01  # absent colour -> negative logit

    def __call__(self, x):
        return self.classify(self.features(x))


class SmallConvNet(nnx.Module):
    """Random conv -> max-pool features; global pool -> dropout -> dense head."""

    def __init__(self, n_classes: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(6, n_classes, rngs=rngs)

    def features(self, x):
        return nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), strides=(2, 2))

    def classify(self, features):
        return self.head(self.dropout(features.mean(axis=(1, 2))))

    def __call__(self, x):
        return self.classify(self.features(x))


def noise_images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)


def colour_image(red: tuple[int, int] | None, green: tuple[int, int] | None) -> np.ndarray:
    """Black image with a bright red square centred in one quadrant and a dimmer green one in
    another; each square covers whole feature cells."""
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    for quadrant, channel, brightness in ((red, 0, 1.0), (green, 1, 0.5)):
        if quadrant is not None:
            r, c = (q * SIZE // 2 + SIZE // 8 for q in quadrant)
            image[r:r + SIZE // 4, c:c + SIZE // 4, channel] = brightness
    return image


@pytest.mark.parametrize("name", QUADRANTS)
def test_map_concentrates_in_the_only_quadrant_the_logit_depends_on(name):
    row, col = QUADRANTS[name]
    model = QuadrantModel(row, col, rngs=rngs())
    images = noise_images(3)
    inside = quadrant_mask(row, col)
    # The premise: the logit's gradient w.r.t. the image is zero outside the quadrant.
    pixel_grads = jax.grad(lambda x: model(x)[:, 0].sum())(jnp.asarray(images))
    assert np.abs(np.asarray(pixel_grads)[:, ~inside]).max() == 0

    result = GradCam(model)(images, class_index=0)
    assert result.maps.shape == (3, SIZE, SIZE) and result.maps.dtype == np.float32
    assert result.maps.min() >= 0 and np.allclose(result.maps.max(axis=(1, 2)), 1.0)
    # Beyond the quadrant, features within one cell (4 px) see its edge through the 3x3 conv, and
    # bilinear upsampling spreads a cell half a cell (2 px) further; past that the map is zero.
    near = np.zeros_like(inside)
    half, reach = SIZE // 2, 4 + 2
    near[max(0, row * half - reach):(row + 1) * half + reach,
         max(0, col * half - reach):(col + 1) * half + reach] = True
    for saliency in result.maps:
        assert saliency[inside].sum() / saliency.sum() > 0.75  # the rest is that border
        assert np.all(saliency[~near] == 0)
        peak = np.unravel_index(saliency.argmax(), saliency.shape)
        assert inside[peak]


def test_negative_evidence_gives_an_empty_map():
    model = QuadrantModel(0, 1, rngs=rngs())
    result = GradCam(model)(noise_images(2), class_index=1)
    # Grad-CAM keeps only features that raise the logit; every feature lowers logit 1.
    assert np.all(result.maps == 0)
    np.testing.assert_array_equal(result.class_ids, [1, 1])


def test_default_class_is_the_prediction_and_a_given_class_moves_the_map():
    model = ColourModel(rngs=rngs())
    image = colour_image(red=(0, 1), green=(1, 0))[None]
    red_area, green_area = quadrant_mask(0, 1), quadrant_mask(1, 0)
    cam = GradCam(model)

    predicted = cam(image)
    assert predicted.class_ids.tolist() == [0]  # the red square is brighter
    np.testing.assert_allclose(predicted.logits, np.asarray(model(jnp.asarray(image))), rtol=1e-6)
    assert predicted.maps[0][red_area].sum() / predicted.maps[0].sum() > 0.95

    green = cam(image, class_index=1)
    assert green.class_ids.tolist() == [1]
    assert green.maps[0][green_area].sum() / green.maps[0].sum() > 0.95

    per_image = cam(np.concatenate([image, image]), class_index=np.array([1, 0]))
    np.testing.assert_allclose(per_image.maps, np.concatenate([green.maps, predicted.maps]),
                               atol=1e-6)


def test_multi_label_maps_for_every_flagged_class():
    model = ColourModel(rngs=rngs())
    images = np.stack([colour_image(red=(0, 0), green=(1, 1)),
                       colour_image(red=(1, 0), green=None)])
    result = GradCam(model).flagged_classes(images)
    assert result.maps.shape == (2, 2, SIZE, SIZE)
    np.testing.assert_array_equal(result.selected, [[True, True], [True, False]])
    assert result.maps[0, 0][quadrant_mask(0, 0)].sum() / result.maps[0, 0].sum() > 0.95
    assert result.maps[0, 1][quadrant_mask(1, 1)].sum() / result.maps[0, 1].sum() > 0.95
    assert result.maps[1, 0][quadrant_mask(1, 0)].sum() / result.maps[1, 0].sum() > 0.95
    # Per-class thresholds: the first image's green logit (~0.02 -> p ~0.505) misses 0.6.
    strict = GradCam(model).flagged_classes(images, thresholds=np.array([0.5, 0.6]))
    np.testing.assert_array_equal(strict.selected, [[True, False], [True, False]])


def test_grad_cam_matches_a_per_image_computation_in_eval_mode():
    model = SmallConvNet(3, rngs=rngs(1))  # train mode: dropout is live
    images = noise_images(4, seed=1)
    cam = GradCam(model)
    assert not model.dropout.deterministic  # the caller's model keeps its mode
    result = cam(images, class_index=2)
    np.testing.assert_array_equal(result.maps, cam(images, class_index=2).maps)

    model.eval()
    for i, image in enumerate(images):
        features = model.features(jnp.asarray(image[None]))
        grads = jax.grad(lambda a: model.classify(a)[0, 2])(features)
        weights = grads.mean(axis=(1, 2))  # [1, C]
        low_res = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", features, weights))
        expected = jax.image.resize(low_res, (1, SIZE, SIZE), "bilinear")[0]
        expected = expected / expected.max()
        np.testing.assert_allclose(result.maps[i], expected, atol=1e-5)
        np.testing.assert_allclose(result.logits[i], model(jnp.asarray(image[None]))[0],
                                   rtol=1e-5)


def test_rejects_bad_class_and_shape():
    cam = GradCam(ColourModel(rngs=rngs()))
    with pytest.raises(ValueError, match="outside the model's 2 classes"):
        cam(noise_images(1), class_index=5)
    with pytest.raises(ValueError, match=r"\[B, H, W, channels\]"):
        cam(noise_images(1)[0])


def test_overlay_png_has_the_photo_size_and_shows_the_photo_where_the_map_is_zero(tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    saliency = np.zeros((8, 8), np.float32)
    saliency[:4, 4:] = 1.0  # top-right; resized to the photo
    path = save_overlay(tmp_path / "maps" / "a.png", photo, saliency)
    written = np.asarray(Image.open(path))
    assert written.shape == (48, 64, 3) and written.dtype == np.uint8
    np.testing.assert_array_equal(written[30:, :20], photo[30:, :20])  # map 0: untouched
    assert np.abs(written[:18, 40:].astype(int) - photo[:18, 40:]).mean() > 20
    np.testing.assert_array_equal(written, overlay(photo, saliency))

    grey = overlay(photo[..., 0], np.ones((48, 64)), alpha=1.0, colormap="gray")
    assert np.all(grey == 255)  # full opacity of gray at 1.0 is white
    with pytest.raises(ValueError, match="uint8"):
        overlay(photo.astype(np.float32), saliency)


def test_pixel_auroc_against_masks():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 16, 16)) > 0.8
    noise = rng.uniform(size=masks.shape)
    assert saliency_pixel_auroc(masks.astype(float), masks) == 1.0
    assert saliency_pixel_auroc(1.0 - masks, masks.astype(np.uint8) * 255) == 0.0
    assert saliency_pixel_auroc(noise, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), noise.ravel()))
    assert np.isnan(saliency_pixel_auroc(noise, np.zeros_like(masks)))
    with pytest.raises(ValueError, match="differ"):
        saliency_pixel_auroc(noise[:, :8], masks)


def test_grad_cam_finds_the_lesion_of_a_colour_model():
    image = colour_image(red=(1, 1), green=None)
    lesion = image[..., 0] > 0
    result = GradCam(ColourModel(rngs=rngs()))(image[None])
    assert saliency_pixel_auroc(result.maps, lesion[None]) > 0.95
