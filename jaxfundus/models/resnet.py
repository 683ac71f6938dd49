"""ResNet v1 as Keras' ``ResNet50`` (bottleneck, stages 3-4-6-3) plus a basic-block ResNet-18.

Differences from ``keras.applications.ResNet50``, all deliberate:

* The study's Flatten head is replaced by global average pooling + dense, so any input
  size works (Flatten would tie the weights to one image size).
* Convolutions have no bias: every one is followed by BatchNorm, whose mean subtraction
  cancels a bias (Keras keeps these 26,560 redundant parameters).
* The last BatchNorm of each residual branch starts with scale 0, so every block starts
  as the identity, which helps training from scratch (Goyal et al. 2017).
* BatchNorm momentum 0.9 instead of Keras' 0.99 (see ``layers.BN_MOMENTUM``).
"""

import functools
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxfundus.models import layers
from jaxfundus.models.ops import max_pool_3x3_stride2

STAGE_FILTERS = (64, 128, 256, 512)


def conv_bn(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    zero_init_scale: bool = False,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    **conv_options,
) -> layers.ConvNormAct:
    """Conv (no bias) -> BatchNorm, no activation: [B,H,W,Cin] -> [B,H/s,W/s,Cout].

    Keras' kernel initialiser and ResNet50's BatchNormalization(epsilon=1.001e-5);
    ``zero_init_scale`` for the last BatchNorm of a residual branch (the block starts as the
    identity). ``conv_options``: strides, padding.
    """
    conv = layers.conv(
        in_features,
        out_features,
        kernel_size,
        kernel_init=layers.KERAS_KERNEL_INIT,
        dtype=dtype,
        rngs=rngs,
        **conv_options,
    )
    scale_init = nnx.initializers.zeros if zero_init_scale else nnx.initializers.ones
    return layers.conv_bn(conv, epsilon=1.001e-5, scale_init=scale_init, dtype=dtype, rngs=rngs)


def shortcut_projection(
    in_features: int, out_features: int, strides: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
) -> layers.ConvNormAct | None:
    """The 1x1 projection a block's shortcut needs when its shape changes, else None."""
    if strides == 1 and in_features == out_features:
        return None
    return conv_bn(in_features, out_features, 1, strides=strides, dtype=dtype, rngs=rngs)


class BottleneckBlock(nnx.Module):
    """Keras ``block1``: 1x1 (stride here, as Keras) -> 3x3 -> 1x1 x4, plus shortcut."""

    expansion = 4

    def __init__(
        self, in_features: int, filters: int, strides: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        out_features = filters * self.expansion
        kw = dict(dtype=dtype, rngs=rngs)
        self.reduce = conv_bn(in_features, filters, 1, strides=strides, **kw)
        self.spatial = conv_bn(filters, filters, 3, **kw)
        self.expand = conv_bn(filters, out_features, 1, zero_init_scale=True, **kw)
        self.projection = shortcut_projection(in_features, out_features, strides, **kw)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shortcut = x if self.projection is None else self.projection(x)
        y = nnx.relu(self.reduce(x))
        y = nnx.relu(self.spatial(y))
        return nnx.relu(self.expand(y) + shortcut)


class BasicBlock(nnx.Module):
    """ResNet-18/34 block: 3x3 (stride) -> 3x3, plus shortcut."""

    expansion = 1

    def __init__(
        self, in_features: int, filters: int, strides: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        kw = dict(dtype=dtype, rngs=rngs)
        self.first = conv_bn(in_features, filters, 3, strides=strides, **kw)
        self.second = conv_bn(filters, filters, 3, zero_init_scale=True, **kw)
        self.projection = shortcut_projection(in_features, filters, strides, **kw)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shortcut = x if self.projection is None else self.projection(x)
        y = nnx.relu(self.first(x))
        return nnx.relu(self.second(y) + shortcut)


class ResNet(layers.Classifier):
    """7x7/2 stem + 3x3/2 max pool -> 4 residual stages -> global average pool -> dense.

    Input: float32[B, H, W, in_channels], any H, W >= 32 (total stride 32).
    Output: float32[B, num_outputs] logits, whatever the compute ``dtype``.
    ``features``: [B, H/32, W/32, 512 * block.expansion] in the compute ``dtype``.
    """

    def __init__(
        self,
        num_outputs: int,
        *,
        block: type[BottleneckBlock] | type[BasicBlock],
        stage_sizes: Sequence[int],
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        # Keras: ZeroPadding2D(3) + 'valid' 7x7/2 conv.
        self.stem = conv_bn(
            in_channels, 64, 7, strides=2, padding=((3, 3), (3, 3)), dtype=dtype, rngs=rngs
        )
        blocks = []
        in_features = 64
        for stage, (filters, num_blocks) in enumerate(zip(STAGE_FILTERS, stage_sizes, strict=True)):
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(in_features, filters, strides, dtype=dtype, rngs=rngs))
                in_features = filters * block.expansion
        self.blocks = nnx.List(blocks)
        self.head = layers.logits_head(in_features, num_outputs, rngs=rngs)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        x = max_pool_3x3_stride2(nnx.relu(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return x


# Keras ResNet50 layout (23.5M parameters before the head).
resnet50 = functools.partial(ResNet, block=BottleneckBlock, stage_sizes=(3, 4, 6, 3))
# Basic blocks 2-2-2-2 (11.2M parameters before the head), for small machines.
resnet18 = functools.partial(ResNet, block=BasicBlock, stage_sizes=(2, 2, 2, 2))
