"""Convolutional variational autoencoder for reconstruction-based anomaly scores."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxfundus.models.ganomaly import check_image_size
from jaxfundus.models.ops import BatchNorm, Conv, ConvTranspose

# torch's BatchNorm2d defaults (momentum 0.1 there = 0.9 in nnx).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


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


def _batch_norm(features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> BatchNorm:
    return BatchNorm(
        features,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


class DownBlock(nnx.Module):
    """Conv 4x4/2 (no bias) -> BN -> LeakyReLU(0.2): [B,S,S,Cin] -> [B,S/2,S/2,Cout]."""

    def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.conv = Conv(
            in_features,
            out_features,
            (4, 4),
            strides=2,
            padding=((1, 1), (1, 1)),
            use_bias=False,
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        self.norm = _batch_norm(out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nnx.leaky_relu(self.norm(self.conv(x)), 0.2)


def _up_conv(
    in_features: int, out_features: int, *, use_bias: bool, dtype: jnp.dtype, rngs: nnx.Rngs
) -> ConvTranspose:
    # Padding 2 on the dilated input = torch's ConvTranspose2d(4, 2, padding=1): doubles S.
    return ConvTranspose(
        in_features,
        out_features,
        (4, 4),
        strides=2,
        padding=((2, 2), (2, 2)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


class UpBlock(nnx.Module):
    """ConvTranspose 4x4/2 (no bias) -> BN -> ReLU: [B,S,S,Cin] -> [B,2S,2S,Cout]."""

    def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.conv = _up_conv(in_features, out_features, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm = _batch_norm(out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nnx.relu(self.norm(self.conv(x)))


class ConvVAE(nnx.Module):
    """Conv encoder -> (mu, logvar) -> sampled z -> conv-transpose decoder.

    Encoder: stride-2 DownBlocks from S down to 4x4, channels ``base_features`` doubling
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
        check_image_size(image_size, 8)
        kw = dict(dtype=dtype, rngs=rngs)
        num_down = int(math.log2(image_size)) - 2
        widths = [min(base_features * 2**i, max_features) for i in range(num_down)]
        self.encoder = nnx.List(
            DownBlock(cin, cout, **kw)
            for cin, cout in zip([channels, *widths[:-1]], widths, strict=True)
        )
        flat_features = 4 * 4 * widths[-1]
        # mu/logvar in float32: exp(logvar) and the KL term are precision sensitive.
        self.to_mu = nnx.Linear(flat_features, latent_dim, dtype=jnp.float32, rngs=rngs)
        self.to_logvar = nnx.Linear(flat_features, latent_dim, dtype=jnp.float32, rngs=rngs)
        self.sample = GaussianSample(rngs=rngs)
        self.from_latent = nnx.Linear(latent_dim, flat_features, param_dtype=jnp.float32, **kw)
        self.decoder = nnx.List(
            UpBlock(cin, cout, **kw)
            for cin, cout in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.to_image = _up_conv(widths[0], channels, use_bias=True, **kw)
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
