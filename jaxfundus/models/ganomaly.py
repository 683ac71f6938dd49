"""GANomaly (Akcay et al. 2018) generator and discriminator, following anomalib's torch model.

Matches ``anomalib.models.image.ganomaly.torch_model`` (defaults: 64 base features,
latent 100, ``extra_layers=0``, final encoder conv on) and its DCGAN ``weights_init``,
with these deliberate differences:

* The first encoder conv pads by 1 (the original GANomaly/DCGAN code) instead of anomalib's
  4, so every stride-2 conv halves the map exactly (anomalib gets 19/9/4 at 32 px, and a
  2x2 "latent" at 16 px).
* Square, power-of-two images only (anomalib pads inputs up to a power of two).
* The discriminator returns logits; anomalib applies the sigmoid inside the model.
* BatchNorm uses torch's defaults (momentum 0.1 there = 0.9 in nnx, epsilon 1e-5).
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxfundus.models import layers
from jaxfundus.models.layers import check_image_size

DCGAN_STDDEV = 0.02


def dcgan_scale_init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jax.Array:
    """BatchNorm scale ~ N(1, 0.02), as DCGAN/anomalib ``weights_init``."""
    return 1.0 + DCGAN_STDDEV * jax.random.normal(key, shape, dtype)


def num_pyramid_layers(image_size: int) -> int:
    """Stride-2 layers between the first conv's output (size/2) and the 4x4 map."""
    return int(math.log2(image_size)) - 3


# DCGAN ``weights_init``: conv kernels ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02).
_dcgan_init = dict(kernel_init=nnx.initializers.normal(DCGAN_STDDEV))
_conv = functools.partial(layers.conv, **_dcgan_init)
_downsample = functools.partial(layers.downsample_conv, **_dcgan_init)
_upsample = functools.partial(layers.upsample_conv, **_dcgan_init)
# conv -> BatchNorm (torch's epsilon, DCGAN init) -> activation
_conv_bn = functools.partial(
    layers.conv_bn, epsilon=layers.TORCH_BN_EPSILON, scale_init=dcgan_scale_init
)


def _extra_layer(features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> layers.ConvNormAct:
    """anomalib's extra layer, in the encoder and (LeakyReLU too) the decoder: conv 3x3 + BN
    + LeakyReLU(0.2), keeping size and width."""
    conv = _conv(features, features, 3, padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
    return _conv_bn(conv, activation=layers.leaky_relu, dtype=dtype, rngs=rngs)


class DCGANEncoder(nnx.Module):
    """DCGAN encoder: [B,S,S,C] -> conv 4x4/2 (no BN) -> [conv 4x4/2 + BN] down to 4x4
    -> conv 4x4 'valid' -> [B, out_features] (float32).

    Channels: ``base_features`` after the first conv, doubling at each pyramid layer.
    ``extra_layers`` adds conv 3x3 + BN + LeakyReLU blocks at size S/2 (anomalib option).
    """

    def __init__(self, image_size: int, channels: int, out_features: int, *, base_features: int,
                 extra_layers: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        check_image_size(image_size, 16)
        kw = dict(dtype=dtype, rngs=rngs)
        self.initial = _downsample(channels, base_features, **kw)
        blocks = [_extra_layer(base_features, **kw) for _ in range(extra_layers)]
        features = base_features
        for _ in range(num_pyramid_layers(image_size)):
            conv = _downsample(features, 2 * features, **kw)
            blocks.append(_conv_bn(conv, activation=layers.leaky_relu, **kw))
            features *= 2
        self.layers = nnx.List(blocks)
        self.final = _conv(features, out_features, 4, padding="VALID", **kw)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B,S,S,C] -> the last feature map [B,4,4,base_features*S/8] (compute dtype)."""
        x = layers.leaky_relu(self.initial(x))
        for layer in self.layers:
            x = layer(x)
        return x

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        latent = self.final(self.features(x))
        return latent.reshape(latent.shape[0], -1).astype(jnp.float32)


class DCGANDecoder(nnx.Module):
    """DCGAN decoder: [B, latent] -> convT 4x4 'valid' to 4x4 -> [convT 4x4/2 + BN + ReLU]
    -> (extra layers) -> convT 4x4/2 -> tanh -> float32[B, S, S, channels] in [-1, 1]."""

    def __init__(self, image_size: int, channels: int, latent_size: int, *, base_features: int,
                 extra_layers: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        check_image_size(image_size, 16)
        kw = dict(dtype=dtype, rngs=rngs)
        num_pyramid = num_pyramid_layers(image_size)
        features = base_features * 2**num_pyramid
        # A 1x1 input with 'VALID' (pad 3 = kernel - 1) gives 4x4, as torch's padding=0.
        conv = layers.conv_transpose(
            latent_size, features, 4, strides=1, padding="VALID", **_dcgan_init, **kw
        )
        blocks = [_conv_bn(conv, activation=nnx.relu, **kw)]
        for _ in range(num_pyramid):
            conv = _upsample(features, features // 2, **kw)
            blocks.append(_conv_bn(conv, activation=nnx.relu, **kw))
            features //= 2
        blocks.extend(_extra_layer(features, **kw) for _ in range(extra_layers))
        self.layers = nnx.List(blocks)
        self.final = _upsample(features, channels, **kw)

    def __call__(self, latent: jnp.ndarray) -> jnp.ndarray:
        x = latent.reshape(latent.shape[0], 1, 1, -1)
        for layer in self.layers:
            x = layer(x)
        return jnp.tanh(self.final(x).astype(jnp.float32))


class GanomalyGenerator(nnx.Module):
    """Encoder -> decoder -> encoder.

    Input: float32[B, S, S, channels] scaled to [-1, 1] (the decoder ends in tanh).
    Output: ``(fake float32[B,S,S,channels], latent_i float32[B,latent_size],
    latent_o float32[B,latent_size])``; the anomaly score is ``mean((latent_i - latent_o)**2)``.
    """

    def __init__(self, image_size: int, channels: int = 3, latent_size: int = 100,
                 base_features: int = 64, extra_layers: int = 0, *,
                 dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(base_features=base_features, extra_layers=extra_layers, dtype=dtype, rngs=rngs)
        self.encoder = DCGANEncoder(image_size, channels, latent_size, **kw)
        self.decoder = DCGANDecoder(image_size, channels, latent_size, **kw)
        self.reencoder = DCGANEncoder(image_size, channels, latent_size, **kw)

    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        latent_i = self.encoder(x)
        fake = self.decoder(latent_i)
        latent_o = self.reencoder(fake)
        return fake, latent_i, latent_o


class GanomalyDiscriminator(nnx.Module):
    """DCGAN encoder with a single output: real/fake logit plus the features it is read from.

    Input: float32[B, S, S, channels]. Output: ``(logits float32[B], features
    float32[B, 4, 4, base_features * S / 8])``; features feed the feature-matching loss.
    """

    def __init__(self, image_size: int, channels: int = 3, base_features: int = 64,
                 extra_layers: int = 0, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(base_features=base_features, extra_layers=extra_layers, dtype=dtype, rngs=rngs)
        self.encoder = DCGANEncoder(image_size, channels, 1, **kw)

    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        features = self.encoder.features(x)
        logits = self.encoder.final(features)
        return logits.reshape(-1).astype(jnp.float32), features.astype(jnp.float32)
