"""DRAEM sub-networks, SSIM and focal losses, and real training steps on synthetic anomalies."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx
from skimage.metrics import structural_similarity
from sklearn.metrics import log_loss

from jaxfundus.data.images import letterbox, load_rgb
from jaxfundus.data.labels import DISEASES
from jaxfundus.data.pipeline import normalize
from jaxfundus.models.draem import DRAEM, draem_loss, widths
from jaxfundus.models.losses import focal_loss, reconstruction_loss, ssim
from jaxfundus.synthetic.anomalies import paint_anomaly


def rngs(seed: int = 0) -> nnx.Rngs:
    # 'rbg' keys: threefry initialisers compile for ~1 s per parameter shape on CPU.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def abstract_call(model: nnx.Module, shape: tuple[int, ...]):
    """Output shapes/dtypes of ``model(x)`` without compiling or running it."""
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s, copy=True)(x), state, images)


@pytest.mark.parametrize(("size", "levels"), [(32, 4), (64, 4), (128, 5)])
def test_forward_shapes(size, levels):
    model = nnx.eval_shape(lambda: DRAEM(size, levels=levels, rngs=nnx.Rngs(0)))
    recon, logits = abstract_call(model, (2, size, size, 3))
    assert (recon.shape, recon.dtype) == ((2, size, size, 3), jnp.float32)
    assert (logits.shape, logits.dtype) == ((2, size, size), jnp.float32)


@pytest.mark.slow
def test_anomaly_map_is_a_probability_per_pixel():
    model = DRAEM(32, recon_features=4, seg_features=4, levels=2, rngs=rngs())
    x = jnp.tanh(jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32))
    probability = nnx.jit(lambda m, x: m.anomaly_map(x))(model, x)
    assert probability.shape == (2, 32, 32)
    assert float(probability.min()) >= 0 and float(probability.max()) <= 1


@pytest.mark.parametrize("size", [16, 48, 100])
def test_image_size_must_be_a_power_of_two_of_at_least_32(size):
    with pytest.raises(ValueError, match="power of two >= 32"):
        DRAEM(size, rngs=nnx.Rngs(0))


def test_too_many_levels_are_refused():
    with pytest.raises(ValueError, match="5 poolings"):
        DRAEM(32, levels=5, rngs=nnx.Rngs(0))


def test_widths_double_and_the_bottleneck_repeats_the_last():
    assert widths(16, 4) == [16, 32, 64, 128, 128]


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 24, 20, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    expected = [structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=2.0,
                                      channel_axis=-1) for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(ssim(jnp.asarray(x), jnp.asarray(y)), expected, rtol=1e-4)
    np.testing.assert_allclose(ssim(jnp.asarray(x), jnp.asarray(x)), [1.0, 1.0], rtol=1e-5)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="window 11"):
        ssim(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))


def test_reconstruction_loss_is_zero_for_a_perfect_reconstruction_only():
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
    assert float(reconstruction_loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(reconstruction_loss(0.5 * x, x)) > 0.1


def test_focal_loss_without_focusing_is_cross_entropy():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, 200).astype(np.float32)
    targets = rng.random(200) < 0.3
    expected = log_loss(targets, 1 / (1 + np.exp(-logits.astype(np.float64))), labels=[0, 1])
    assert float(focal_loss(jnp.asarray(logits), jnp.asarray(targets), gamma=0.0)) == (
        pytest.approx(expected, rel=1e-5))


def test_focal_loss_down_weights_easy_pixels():
    targets = jnp.asarray([1.0, 0.0])
    easy = jnp.asarray([4.0, -4.0])  # confident and right
    hard = jnp.asarray([-1.0, 1.0])  # wrong
    ce_ratio = float(focal_loss(hard, targets, gamma=0.0) / focal_loss(easy, targets, gamma=0.0))
    focal_ratio = float(focal_loss(hard, targets) / focal_loss(easy, targets))
    assert focal_ratio > 10 * ce_ratio
    # alpha weights the positive term by alpha and the negative one by 1 - alpha.
    only_positive = focal_loss(jnp.asarray([0.0]), jnp.asarray([1.0]), alpha=0.25)
    assert float(only_positive) == pytest.approx(0.25 * 0.25 * np.log(2), rel=1e-5)


def training_batch(source_dir, size: int = 32, batch: int = 4):
    """Normal generator images, half with a synthetic anomaly: (augmented, clean, mask)."""
    index = pd.read_csv(source_dir / "data.csv")
    normals = index[index[list(DISEASES)].sum(axis=1) == 0]["filename"].iloc[:batch]
    clean = np.stack([letterbox(load_rgb(source_dir / "img" / name), size) for name in normals])
    augmented, masks = clean.copy(), np.zeros(clean.shape[:3], bool)
    for i in range(0, batch, 2):
        augmented[i], masks[i] = paint_anomaly(clean[i], np.random.default_rng(i))
    return (jnp.asarray(normalize(augmented, "tanh")), jnp.asarray(normalize(clean, "tanh")),
            jnp.asarray(masks))


@jax.jit
def train_step(state, augmented, clean, mask):
    model, optimizer = nnx.merge(TRAIN_GRAPH, state)
    (loss, _), grads = nnx.value_and_grad(
        lambda m: draem_loss(m, augmented, clean, mask), has_aux=True)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


def new_training_state(seed: int = 0):
    model = DRAEM(32, recon_features=8, seg_features=8, levels=3, rngs=rngs(seed))
    return nnx.split((model, nnx.Optimizer(model, optax.adam(2e-3), wrt=nnx.Param)))


TRAIN_GRAPH = nnx.eval_shape(lambda: new_training_state())[0]


def train_losses(batch, steps: int) -> list[float]:
    _, state = new_training_state()
    losses = []
    for _ in range(steps):
        state, loss = train_step(state, *batch)
        losses.append(float(loss))
    return losses


@pytest.mark.slow
def test_training_steps_lower_the_loss_deterministically(tiny_data):
    batch = training_batch(tiny_data.source_dir)
    assert bool(batch[2].any())  # the batch does carry anomalies
    losses = train_losses(batch, 8)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.8 * losses[0]
    assert train_losses(batch, 8) == losses
