"""Convolutional variational autoencoder for reconstruction-based anomaly scores."""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxfundus.models import layers


class GaussianSample(nnx.Module):
    """Reparameterisation ``z = mu + exp(logvar / 2) * eps``, eps ~ N(0, I).

    eps comes from the module's own ``'sample'`` rng stream (falls back to ``'default'``),
    whose counter lives in the model state, so it advances inside a jitted step over
    ``nnx.split`` state and the updated state comes back through ``nnx.state(model)``.
    ``model.eval()`` sets ``deterministic=True``: then ``z = mu`` (deterministic scores).
    """

    def __init__(self, *, deterministic: bool = False, rngs: nnx.Rngs):
        self.deterministic = deterministic
        self.rngs = rngs["sample"].fork()

    def __call__(self, mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
        if self.deterministic:
            return mu
        eps = jax.random.normal(self.rngs(), mu.shape, mu.dtype)
        return mu + jnp.exp(0.5 * logvar) * eps

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``, like ``nnx.Dropout.set_view``."""
        if deterministic is not None:
            self.deterministic = deterministic


class ConvVAE(nnx.Module):
    """Conv encoder -> (mu, logvar) -> sampled z -> conv-transpose decoder.

    Encoder: stride-2 conv blocks from S down to 4x4, channels ``base_features`` doubling
    up to ``max_features``, then dense layers to mu and logvar. Decoder mirrors it and ends
    in tanh, so inputs should be scaled to [-1, 1].

    Input: float32[B, S, S, channels] with S a power of two >= 8.
    Output: ``(recon float32[B,S,S,channels] in [-1, 1], mu float32[B,latent_dim],
    logvar float32[B,latent_dim])``. In train mode z is sampled (rng stream ``'sample'``);
    after ``model.eval()`` z = mu.
    """

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        latent_dim: int = 128,
        base_features: int = 32,
        max_features: int = 256,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        layers.check_image_size(image_size, 8)
        kw = dict(dtype=dtype, rngs=rngs)
        num_down = int(math.log2(image_size)) - 2
        widths = [min(base_features * 2**i, max_features) for i in range(num_down)]
        # torch's BatchNorm2d epsilon; conv 4x4/2 -> BN -> LeakyReLU(0.2) halves S, and
        # conv-transpose 4x4/2 -> BN -> ReLU doubles it.
        conv_bn = functools.partial(layers.conv_bn, epsilon=layers.TORCH_BN_EPSILON, **kw)
        self.encoder = nnx.List(
            conv_bn(layers.downsample_conv(cin, cout, **kw), activation=layers.leaky_relu)
            for cin, cout in zip([channels, *widths[:-1]], widths, strict=True)
        )
        flat_features = 4 * 4 * widths[-1]
        # mu/logvar in float32: exp(logvar) and the KL term are precision sensitive.
        self.to_mu = layers.dense(flat_features, latent_dim, dtype=jnp.float32, rngs=rngs)
        self.to_logvar = layers.dense(flat_features, latent_dim, dtype=jnp.float32, rngs=rngs)
        self.sample = GaussianSample(rngs=rngs)
        self.from_latent = layers.dense(latent_dim, flat_features, **kw)
        self.decoder = nnx.List(
            conv_bn(layers.upsample_conv(cin, cout, **kw), activation=nnx.relu)
            for cin, cout in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.to_image = layers.upsample_conv(widths[0], channels, use_bias=True, **kw)
        self.bottleneck_shape = (4, 4, widths[-1])

    def encode(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """[B,S,S,C] -> (mu, logvar), each float32[B, latent_dim]."""
        for block in self.encoder:
            x = block(x)
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        return self.to_mu(x), self.to_logvar(x)

    def decode(self, z: jnp.ndarray) -> jnp.ndarray:
        """float32[B, latent_dim] -> float32[B,S,S,C] in [-1, 1]."""
        x = nnx.relu(self.from_latent(z)).reshape(z.shape[0], *self.bottleneck_shape)
        for block in self.decoder:
            x = block(x)
        return jnp.tanh(self.to_image(x).astype(jnp.float32))

    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar)), mu, logvar
