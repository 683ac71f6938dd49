"""GANomaly re-initialises its discriminator, inside the jitted step, when its loss collapses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxfundus.config import load_task, resolve_config
from jaxfundus.methods import make_method
from jaxfundus.methods.ganomaly import DISC_COLLAPSE_LOSS


def _method():
    config = resolve_config("ganomaly", "ganomaly", "smoke", image_size=16, learning_rate=2e-3)
    return make_method(load_task("ganomaly"), config)


def _real_images() -> jax.Array:
    """A checkerboard with a little noise: easy for the discriminator to tell from fakes."""
    yy, xx = np.mgrid[:16, :16]
    checker = np.where((yy + xx) % 2, 0.9, -0.9)[None, ..., None]
    noise = 0.05 * np.random.default_rng(0).normal(size=(4, 16, 16, 3))
    return jnp.asarray((checker + noise).astype(np.float32))


@pytest.mark.slow
def test_discriminator_is_reinitialised_when_its_loss_collapses():
    method, images = _method(), _real_images()
    step = jax.jit(method.train_step)

    @jax.jit
    def logits(state):
        """The discriminator's logits on the real and fake batch, as the step sees them."""
        discriminator = nnx.merge(method._disc_train, state.disc_params, state.disc_rest)
        fake = method.generator(state, train=True)(images)[0]
        return discriminator(images)[0], discriminator(fake)[0]

    # Ordinary training never resets; stop at a state whose discriminator puts every real
    # image above zero and every fake below.
    state = jax.jit(method.init_state, static_argnums=0)(0)
    for _ in range(40):
        state, metrics = step(state, {"image": images})
        assert float(metrics["disc_loss"]) > DISC_COLLAPSE_LOSS
        assert int(state.disc_resets) == 0
        real, fake = logits(state)
        if real.min() > 0 > fake.max():
            break
    else:
        raise AssertionError("the discriminator never separated real from fake")

    # The crafted collapse: its output layer scaled up, every logit is far on the right side.
    collapsed = state.replace(disc_params=jax.tree_util.tree_map_with_path(
        lambda path, x: x * 1e3 if "final" in jax.tree_util.keystr(path) else x,
        state.disc_params))
    after, metrics = step(collapsed, {"image": images})
    assert float(metrics["disc_loss"]) < DISC_COLLAPSE_LOSS
    assert float(metrics["disc_resets"]) == 1.0 and int(after.disc_resets) == 1
    fresh_params, fresh_rest = jax.jit(method._fresh_discriminator)(jnp.int32(0))
    for new, expected in zip(jax.tree.leaves(after.disc_params), jax.tree.leaves(fresh_params),
                             strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(expected))
    for new, expected in zip(jax.tree.leaves(after.disc_rest), jax.tree.leaves(fresh_rest),
                             strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(expected))
    # The generator trained on as usual, and the next reset would draw other weights.
    assert not np.array_equal(np.asarray(jax.tree.leaves(after.gen_params)[0]),
                              np.asarray(jax.tree.leaves(collapsed.gen_params)[0]))
    second, _ = jax.jit(method._fresh_discriminator)(jnp.int32(1))
    assert not np.array_equal(np.asarray(jax.tree.leaves(second)[0]),
                              np.asarray(jax.tree.leaves(fresh_params)[0]))
