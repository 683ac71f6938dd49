"""The saliency grid's choice of test images, and Grad-CAM in fixed-size chunks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from jaxfundus.evaluate import explanations
from jaxfundus.evaluate.explanations import Cell, class_maps, grid_cells, write_grid
from jaxfundus.evaluate.saliency import GradCam


class TinyClassifier(nnx.Module):
    """Random conv features, global mean pool, dense head: a FeatureClassifier."""

    def __init__(self, n_classes: int):
        rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.head = nnx.Linear(4, n_classes, rngs=rngs)

    def features(self, x):
        return nnx.relu(self.conv(x))

    def classify(self, features):
        return self.head(features.mean(axis=(1, 2)))

    def __call__(self, x):
        return self.classify(self.features(x))


def test_grid_takes_right_then_wrong_images_of_each_class_in_order():
    truth = np.eye(3, dtype=bool)[[0, 0, 0, 0, 1, 1, 2, 0]]
    predicted_class = np.array([0, 1, 0, 0, 1, 2, 0, 2])
    predicted = np.eye(3, dtype=bool)[predicted_class]
    cells = grid_cells(truth, predicted, predicted_class)
    assert [(c.row, c.image, c.correct, c.shown) for c in cells] == [
        (0, 0, True, 0), (0, 2, True, 0), (0, 1, False, 1), (0, 7, False, 2),  # 3 not shown
        (1, 4, True, 1), (1, 5, False, 2),
        (2, 6, False, 0)]  # class 2 has no right answer


def test_multi_label_grid_shows_the_rows_disease():
    truth = np.array([[1, 1], [1, 0], [0, 1]], bool)
    predicted = np.array([[1, 0], [0, 0], [0, 1]], bool)
    cells = grid_cells(truth, predicted, None)
    assert [(c.row, c.image, c.correct, c.shown) for c in cells] == [
        (0, 0, True, 0), (0, 1, False, 0), (1, 2, True, 1), (1, 0, False, 1)]


def test_chunked_maps_equal_one_call_and_compile_once(monkeypatch):
    monkeypatch.setattr(explanations, "CHUNK", 4)
    images = np.random.default_rng(0).uniform(size=(10, 16, 16, 3)).astype(np.float32)
    class_ids = np.array([0, 1, 2] * 3 + [1])
    gradcam = GradCam(TinyClassifier(3))
    maps = class_maps(gradcam, images, class_ids)
    assert maps.shape == (10, 16, 16)
    np.testing.assert_allclose(maps, gradcam(jnp.asarray(images), class_ids).maps, atol=1e-5)
    assert gradcam._chosen._cache_size() == 2  # chunks of 4 (padded); the one 10-image call


def test_grid_png_has_a_row_per_class(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    maps = rng.uniform(size=(3, 16, 16)).astype(np.float32)
    cells = [Cell(0, 0, True, 0), Cell(0, 1, False, 1), Cell(2, 2, True, 2)]
    probs = rng.dirichlet(np.ones(3), 3)
    write_grid(images, maps, cells, ("normal", "Gla", "DR"), probs, "title", tmp_path / "g.png")
    two_rows = Image.open(tmp_path / "g.png")
    write_grid(images[:1], maps[:1], cells[:1], ("normal", "Gla", "DR"), probs, "title",
               tmp_path / "one.png")
    one_row = Image.open(tmp_path / "one.png")
    assert two_rows.width == one_row.width
    assert two_rows.height > 1.5 * one_row.height  # classes without images get no row
