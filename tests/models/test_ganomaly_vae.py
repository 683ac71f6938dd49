"""GANomaly generator/discriminator and the convolutional VAE."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxfundus.models.ganomaly import GanomalyDiscriminator, GanomalyGenerator
from jaxfundus.models.vae import ConvVAE


def rngs(seed: int = 0) -> nnx.Rngs:
    # 'rbg' keys: threefry initialisers compile for ~1 s per parameter shape on CPU.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def abstract_call(model: nnx.Module, shape: tuple[int, ...]):
    """Output shapes/dtypes of ``model(x)`` without compiling or running it."""
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s, copy=True)(x), state, images)


def images(size: int, batch: int = 4) -> jax.Array:
    # numpy: jax.random would compile a sampler for this shape.
    noise = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)
    return jnp.tanh(jnp.asarray(noise))


@pytest.mark.parametrize(("size", "dtype"), [(32, jnp.float32), (64, jnp.bfloat16)])
def test_ganomaly_shapes(size, dtype):
    generator = nnx.eval_shape(lambda: GanomalyGenerator(size, dtype=dtype, rngs=nnx.Rngs(0)))
    fake, latent_i, latent_o = abstract_call(generator, (2, size, size, 3))
    assert fake.shape == (2, size, size, 3)
    assert latent_i.shape == latent_o.shape == (2, 100)
    assert {fake.dtype, latent_i.dtype, latent_o.dtype} == {jnp.dtype(jnp.float32)}

    discriminator = nnx.eval_shape(
        lambda: GanomalyDiscriminator(size, dtype=dtype, rngs=nnx.Rngs(0))
    )
    logits, features = abstract_call(discriminator, (2, size, size, 3))
    assert (logits.shape, logits.dtype) == ((2,), jnp.float32)
    assert (features.shape, features.dtype) == ((2, 4, 4, 64 * size // 8), jnp.float32)


def test_ganomaly_extra_layers_keep_shapes():
    generator = nnx.eval_shape(lambda: GanomalyGenerator(16, extra_layers=2, rngs=nnx.Rngs(0)))
    fake, latent_i, _ = abstract_call(generator, (1, 16, 16, 3))
    assert (fake.shape, latent_i.shape) == ((1, 16, 16, 3), (1, 100))


@pytest.mark.parametrize("size", [8, 48, 100])
def test_image_size_must_be_a_power_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        GanomalyGenerator(size, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="power of two"):
        GanomalyDiscriminator(size, rngs=nnx.Rngs(0))
    if size != 8:
        with pytest.raises(ValueError, match="power of two"):
            ConvVAE(size, rngs=nnx.Rngs(0))


def test_models_built_apart_share_one_graph():
    # Trainers build models again (restore, evaluation); jitted steps keyed on the graph must
    # not recompile, so layer settings such as activations must compare equal across builds.
    builds = [
        lambda: GanomalyGenerator(16, extra_layers=1, rngs=nnx.Rngs(0)),
        lambda: GanomalyDiscriminator(16, rngs=nnx.Rngs(0)),
        lambda: ConvVAE(16, latent_dim=8, base_features=8, rngs=nnx.Rngs(0)),
    ]
    for build in builds:
        first, second = (nnx.split(nnx.eval_shape(build))[0] for _ in range(2))
        assert first == second and hash(first) == hash(second)


def test_ganomaly_dcgan_init_statistics():
    generator = nnx.jit(lambda: GanomalyGenerator(16, rngs=rngs()))()
    params = nnx.to_flat_state(nnx.state(generator, nnx.Param))
    kernels = np.concatenate([np.ravel(v[...]) for p, v in params if p[-1] == "kernel"])
    scales = np.concatenate([np.ravel(v[...]) for p, v in params if p[-1] == "scale"])
    biases = np.concatenate([np.ravel(v[...]) for p, v in params if p[-1] == "bias"])
    assert abs(kernels.mean()) < 1e-3 and abs(kernels.std() - 0.02) < 1e-3
    assert abs(scales.mean() - 1) < 3e-3 and abs(scales.std() - 0.02) < 3e-3
    assert not biases.any()  # BN biases are the only biases: DCGAN convs have none


def test_vae_shapes():
    vae = nnx.eval_shape(lambda: ConvVAE(64, rngs=nnx.Rngs(0)))
    recon, mu, logvar = abstract_call(vae, (2, 64, 64, 3))
    assert recon.shape == (2, 64, 64, 3)
    assert mu.shape == logvar.shape == (2, 128)
    assert {recon.dtype, mu.dtype, logvar.dtype} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
def test_vae_jitted_split_state_training_reduces_reconstruction_loss():
    vae = nnx.jit(lambda: ConvVAE(16, latent_dim=8, base_features=8, rngs=rngs()))()
    vae.train()
    graphdef, params, rest = nnx.split(vae, nnx.Param, ...)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)
    batch = images(16)

    @jax.jit
    def train_step(params, rest, opt_state):
        def loss_fn(params):
            model = nnx.merge(graphdef, params, rest, copy=True)
            recon, mu, logvar = model(batch)
            reconstruction = jnp.mean((recon - batch) ** 2)
            kl = -0.5 * jnp.mean(1 + logvar - mu**2 - jnp.exp(logvar))
            return reconstruction + 1e-3 * kl, (
                reconstruction,
                nnx.state(model, nnx.Not(nnx.Param)),
            )

        (_, (reconstruction, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, reconstruction

    losses = []
    for _ in range(8):
        params, rest, opt_state, reconstruction = train_step(params, rest, opt_state)
        losses.append(float(reconstruction))
    assert losses[-1] < 0.9 * losses[0], losses

    nnx.update(vae, params, rest)
    assert int(vae.sample.rngs.count[...]) == 8  # the 'sample' stream advanced inside jit
    vae.eval()

    @nnx.jit
    def evaluate_twice(model, x):
        recon, mu, _ = model(x)
        return recon, model(x)[0], model.decode(mu)

    recon, recon_again, decoded_mu = evaluate_twice(vae, batch)
    np.testing.assert_array_equal(recon, recon_again)  # eval: no sampling, running BN stats
    np.testing.assert_allclose(recon, decoded_mu, atol=1e-6)  # eval: z = mu
