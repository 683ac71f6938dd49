"""Inception v3 as Keras' ``InceptionV3`` (stem, mixed0-mixed10) with a GAP + dense head.

Small inputs: Keras needs >= 75 px because the stem and the two grid reductions (mixed3,
mixed8) use 'valid' padding. We keep Keras' 'valid' padding (and so its exact feature-map
sizes, e.g. 8x8 before the head at 299 px) when the smaller input side is >= 75 px, and
switch those layers to 'same' padding below that, so inputs down to 32 px (and smaller)
run. Padding does not change any weight shape, so one set of parameters serves both.
"""

import jax.numpy as jnp
from flax import nnx
from jax import lax

from jaxfundus.models import layers

KERAS_MIN_SIZE = 75


class ConvBN(layers.ConvNormAct):
    """Keras ``conv2d_bn``: conv (no bias) -> BatchNorm without scale -> ReLU.

    ``padding`` is chosen per call ('SAME' or 'VALID') so that the network can pick the
    reductions' padding from the input size; the conv itself is always 'VALID' on an
    explicitly padded input (XLA folds the pad into the convolution). ``nnx.Conv``, not
    ``ops.Conv``: the factorised 1x7/7x1 kernels are not square.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: tuple[int, int],
        *,
        strides: int = 1,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        conv = layers.conv(
            in_features,
            out_features,
            kernel_size,
            layer=nnx.Conv,
            strides=(strides, strides),
            padding="VALID",
            kernel_init=layers.KERAS_KERNEL_INIT,
            dtype=dtype,
            rngs=rngs,
        )
        norm = layers.batch_norm(
            out_features, epsilon=layers.KERAS_BN_EPSILON, use_scale=False, dtype=dtype, rngs=rngs
        )
        super().__init__(conv, norm, nnx.relu)

    def __call__(self, x: jnp.ndarray, padding: str = "SAME") -> jnp.ndarray:
        kernel_size, strides = self.conv.kernel_size, self.conv.strides
        if padding == "SAME" and kernel_size != (1, 1):
            pads = lax.padtype_to_pads(x.shape[1:3], kernel_size, strides, "SAME")
            x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        return super().__call__(x)


def _avg_pool_same(x: jnp.ndarray) -> jnp.ndarray:
    # Keras' AveragePooling2D(padding='same') averages over the valid pixels only.
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _max_pool_reduce(x: jnp.ndarray, padding: str) -> jnp.ndarray:
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=padding)


class Stem(nnx.Module):
    """conv 3x3/2, 3x3, 3x3 -> max pool -> conv 1x1, 3x3 -> max pool: 299 px -> 35x35x192."""

    def __init__(self, in_channels: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.conv1 = ConvBN(in_channels, 32, (3, 3), strides=2, **kw)
        self.conv2 = ConvBN(32, 32, (3, 3), **kw)
        self.conv3 = ConvBN(32, 64, (3, 3), **kw)
        self.conv4 = ConvBN(64, 80, (1, 1), **kw)
        self.conv5 = ConvBN(80, 192, (3, 3), **kw)

    def __call__(self, x: jnp.ndarray, padding: str) -> jnp.ndarray:
        x = self.conv1(x, padding)
        x = self.conv2(x, padding)
        x = self.conv3(x)
        x = _max_pool_reduce(x, padding)
        x = self.conv4(x)
        x = self.conv5(x, padding)
        return _max_pool_reduce(x, padding)


class InceptionA(nnx.Module):
    """mixed0-2 (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features."""

    def __init__(self, in_features: int, pool_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.branch1x1 = ConvBN(in_features, 64, (1, 1), **kw)
        self.branch5x5_1 = ConvBN(in_features, 48, (1, 1), **kw)
        self.branch5x5_2 = ConvBN(48, 64, (5, 5), **kw)
        self.branch3x3dbl_1 = ConvBN(in_features, 64, (1, 1), **kw)
        self.branch3x3dbl_2 = ConvBN(64, 96, (3, 3), **kw)
        self.branch3x3dbl_3 = ConvBN(96, 96, (3, 3), **kw)
        self.branch_pool = ConvBN(in_features, pool_features, (1, 1), **kw)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        branches = (
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_same(x)),
        )
        return jnp.concatenate(branches, axis=-1)


class ReductionA(nnx.Module):
    """mixed3 (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 768 channels."""

    def __init__(self, in_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.branch3x3 = ConvBN(in_features, 384, (3, 3), strides=2, **kw)
        self.branch3x3dbl_1 = ConvBN(in_features, 64, (1, 1), **kw)
        self.branch3x3dbl_2 = ConvBN(64, 96, (3, 3), **kw)
        self.branch3x3dbl_3 = ConvBN(96, 96, (3, 3), strides=2, **kw)

    def __call__(self, x: jnp.ndarray, padding: str) -> jnp.ndarray:
        branches = (
            self.branch3x3(x, padding),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)), padding),
            _max_pool_reduce(x, padding),
        )
        return jnp.concatenate(branches, axis=-1)


class InceptionC(nnx.Module):
    """mixed4-7 (17x17): factorised 7x7 branches with ``c7`` inner channels -> 768."""

    def __init__(self, in_features: int, c7: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.branch1x1 = ConvBN(in_features, 192, (1, 1), **kw)
        self.branch7x7_1 = ConvBN(in_features, c7, (1, 1), **kw)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), **kw)
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), **kw)
        self.branch7x7dbl_1 = ConvBN(in_features, c7, (1, 1), **kw)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), **kw)
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), **kw)
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), **kw)
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), **kw)
        self.branch_pool = ConvBN(in_features, 192, (1, 1), **kw)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for conv in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = conv(branch7x7dbl)
        branches = (
            self.branch1x1(x),
            branch7x7,
            branch7x7dbl,
            self.branch_pool(_avg_pool_same(x)),
        )
        return jnp.concatenate(branches, axis=-1)


class ReductionB(nnx.Module):
    """mixed8 (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 1280 channels."""

    def __init__(self, in_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.branch3x3_1 = ConvBN(in_features, 192, (1, 1), **kw)
        self.branch3x3_2 = ConvBN(192, 320, (3, 3), strides=2, **kw)
        self.branch7x7x3_1 = ConvBN(in_features, 192, (1, 1), **kw)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), **kw)
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), **kw)
        self.branch7x7x3_4 = ConvBN(192, 192, (3, 3), strides=2, **kw)

    def __call__(self, x: jnp.ndarray, padding: str) -> jnp.ndarray:
        branch7x7x3 = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        branches = (
            self.branch3x3_2(self.branch3x3_1(x), padding),
            self.branch7x7x3_4(branch7x7x3, padding),
            _max_pool_reduce(x, padding),
        )
        return jnp.concatenate(branches, axis=-1)


class InceptionE(nnx.Module):
    """mixed9-10 (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1 -> 2048."""

    def __init__(self, in_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        self.branch1x1 = ConvBN(in_features, 320, (1, 1), **kw)
        self.branch3x3_1 = ConvBN(in_features, 384, (1, 1), **kw)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), **kw)
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), **kw)
        self.branch3x3dbl_1 = ConvBN(in_features, 448, (1, 1), **kw)
        self.branch3x3dbl_2 = ConvBN(448, 384, (3, 3), **kw)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), **kw)
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), **kw)
        self.branch_pool = ConvBN(in_features, 192, (1, 1), **kw)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        branch3x3 = self.branch3x3_1(x)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branches = (
            self.branch1x1(x),
            self.branch3x3_2a(branch3x3),
            self.branch3x3_2b(branch3x3),
            self.branch3x3dbl_3a(branch3x3dbl),
            self.branch3x3dbl_3b(branch3x3dbl),
            self.branch_pool(_avg_pool_same(x)),
        )
        return jnp.concatenate(branches, axis=-1)


class InceptionV3(layers.Classifier):
    """Keras InceptionV3 body (21.8M parameters) -> global average pool -> dense logits.

    Input: float32[B, H, W, in_channels]; Keras-exact for min(H, W) >= 75, 'same'-padded
    reductions below (see module docstring). Output: float32[B, num_outputs] logits,
    whatever the compute ``dtype``. ``features``: mixed10's output [B, h, w, 2048] in the
    compute ``dtype`` (8x8 at 299 px).
    """

    def __init__(
        self,
        num_outputs: int,
        *,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, rngs=rngs)
        self.stem = Stem(in_channels, **kw)
        self.mixed0 = InceptionA(192, 32, **kw)
        self.mixed1 = InceptionA(256, 64, **kw)
        self.mixed2 = InceptionA(288, 64, **kw)
        self.mixed3 = ReductionA(288, **kw)
        self.mixed4 = InceptionC(768, 128, **kw)
        self.mixed5 = InceptionC(768, 160, **kw)
        self.mixed6 = InceptionC(768, 160, **kw)
        self.mixed7 = InceptionC(768, 192, **kw)
        self.mixed8 = ReductionB(768, **kw)
        self.mixed9 = InceptionE(1280, **kw)
        self.mixed10 = InceptionE(2048, **kw)
        self.head = layers.logits_head(2048, num_outputs, rngs=rngs)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        padding = "VALID" if min(x.shape[1:3]) >= KERAS_MIN_SIZE else "SAME"
        x = self.stem(x, padding)
        for block in (self.mixed0, self.mixed1, self.mixed2):
            x = block(x)
        x = self.mixed3(x, padding)
        for block in (self.mixed4, self.mixed5, self.mixed6, self.mixed7):
            x = block(x)
        x = self.mixed8(x, padding)
        return self.mixed10(self.mixed9(x))
