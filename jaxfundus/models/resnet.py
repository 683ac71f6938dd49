"""ResNet v1 as Keras' ``ResNet50`` (bottleneck, stages 3-4-6-3) plus a basic-block ResNet-18.

Differences from ``keras.applications.ResNet50``, all deliberate:

* The study's Flatten head is replaced by global average pooling + dense, so any input
  size works (Flatten would tie the weights to one image size).
* Convolutions have no bias: every one is followed by BatchNorm, whose mean subtraction
  cancels a bias (Keras keeps these 26,560 redundant parameters).
* The last BatchNorm of each residual branch starts with scale 0, so every block starts
  as the identity, which helps training from scratch (Goyal et al. 2017).
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxfundus.models.ops import BatchNorm, Conv, max_pool_3x3_stride2

# Keras ResNet50 uses BatchNormalization(epsilon=1.001e-5). Its momentum 0.99 (same convention
# as nnx) needs hundreds of steps before eval-mode statistics mean anything; our CPU runs
# train for ~100, so we use PyTorch's 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1.001e-5
STAGE_FILTERS = (64, 128, 256, 512)


class ConvBN(nnx.Module):
    """Conv (no bias) -> BatchNorm, no activation: [B,H,W,Cin] -> [B,H/s,W/s,Cout]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        strides: int = 1,
        padding: str | Sequence[tuple[int, int]] = "SAME",
        zero_init_scale: bool = False,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = Conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=strides,
            padding=padding,
            use_bias=False,
            kernel_init=nnx.initializers.glorot_uniform(),  # Keras' default
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        self.norm = BatchNorm(
            out_features,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            scale_init=nnx.initializers.zeros if zero_init_scale else nnx.initializers.ones,
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.norm(self.conv(x))


class BottleneckBlock(nnx.Module):
    """Keras ``block1``: 1x1 (stride here, as Keras) -> 3x3 -> 1x1 x4, plus shortcut."""

    expansion = 4

    def __init__(
        self, in_features: int, filters: int, strides: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        out_features = filters * self.expansion
        self.reduce = ConvBN(in_features, filters, 1, strides=strides, dtype=dtype, rngs=rngs)
        self.spatial = ConvBN(filters, filters, 3, dtype=dtype, rngs=rngs)
        self.expand = ConvBN(filters, out_features, 1, zero_init_scale=True, dtype=dtype, rngs=rngs)
        self.projection = (
            ConvBN(in_features, out_features, 1, strides=strides, dtype=dtype, rngs=rngs)
            if strides != 1 or in_features != out_features
            else None
        )

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
        self.first = ConvBN(in_features, filters, 3, strides=strides, dtype=dtype, rngs=rngs)
        self.second = ConvBN(filters, filters, 3, zero_init_scale=True, dtype=dtype, rngs=rngs)
        self.projection = (
            ConvBN(in_features, filters, 1, strides=strides, dtype=dtype, rngs=rngs)
            if strides != 1 or in_features != filters
            else None
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shortcut = x if self.projection is None else self.projection(x)
        y = nnx.relu(self.first(x))
        return nnx.relu(self.second(y) + shortcut)


class ResNet(nnx.Module):
    """7x7/2 stem + 3x3/2 max pool -> 4 residual stages -> global average pool -> dense.

    Input: float32[B, H, W, in_channels], any H, W >= 32 (total stride 32).
    Output: float32[B, num_outputs] logits, whatever the compute ``dtype``.
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
        self.stem = ConvBN(
            in_channels,
            64,
            7,
            strides=2,
            padding=((3, 3), (3, 3)),
            dtype=dtype,
            rngs=rngs,
        )
        blocks = []
        in_features = 64
        for stage, (filters, num_blocks) in enumerate(zip(STAGE_FILTERS, stage_sizes, strict=True)):
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(in_features, filters, strides, dtype=dtype, rngs=rngs))
                in_features = filters * block.expansion
        self.blocks = nnx.List(blocks)
        # The head runs in float32: logits feed the loss, and it is tiny.
        self.head = nnx.Linear(
            in_features,
            num_outputs,
            kernel_init=nnx.initializers.glorot_uniform(),
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = max_pool_3x3_stride2(nnx.relu(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2), dtype=jnp.float32))


def resnet50(
    num_outputs: int, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32, in_channels: int = 3
) -> ResNet:
    """Keras ResNet50 layout (23.5M parameters before the head)."""
    return ResNet(
        num_outputs,
        block=BottleneckBlock,
        stage_sizes=(3, 4, 6, 3),
        in_channels=in_channels,
        dtype=dtype,
        rngs=rngs,
    )


def resnet18(
    num_outputs: int, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32, in_channels: int = 3
) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2, 11.2M parameters before the head) for small machines."""
    return ResNet(
        num_outputs,
        block=BasicBlock,
        stage_sizes=(2, 2, 2, 2),
        in_channels=in_channels,
        dtype=dtype,
        rngs=rngs,
    )
