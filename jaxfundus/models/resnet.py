"""ResNet v1 as Keras' ``ResNet50`` (bottleneck, stages 3-4-6-3) plus a basic-block ResNet-18.

Differences from ``keras.applications.ResNet50``, all deliberate:

* The study's Flatten head is replaced by global average pooling + dense, so any input
  size works (Flatten would tie the weights to one image size).
* Convolutions have no bias: every one is followed by BatchNorm, whose mean subtraction
  cancels a bias (Keras keeps these 26,560 redundant parameters).
* The last BatchNorm of each residual branch starts with scale 0, so every block starts
  as the identity, which helps training from scratch (Goyal et al. 2017).
"""

import functools
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx
from jax import lax

# Keras ResNet50 uses BatchNormalization(epsilon=1.001e-5). Its momentum 0.99 (same convention
# as nnx) needs hundreds of steps before eval-mode statistics mean anything; our CPU runs
# train for ~100, so we use PyTorch's 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1.001e-5
STAGE_FILTERS = (64, 128, 256, 512)


def window_views(
    x: jnp.ndarray, window: int, strides: int, pads: Sequence[tuple[int, int]]
) -> list[jnp.ndarray]:
    """The window*window shifted, strided views of zero-padded x that a conv or pool combines.

    x: [B,H,W,C] -> window**2 arrays [B,out_h,out_w,C], out = (padded side - window) // s + 1.
    """
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out_h, out_w = ((side - window) // strides + 1 for side in padded.shape[1:3])
    span_h, span_w = (out_h - 1) * strides + 1, (out_w - 1) * strides + 1
    return [
        padded[:, i : i + span_h : strides, j : j + span_w : strides]
        for i in range(window)
        for j in range(window)
    ]


def conv_as_matmul(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: int, pads: Sequence[tuple[int, int]]
) -> jnp.ndarray:
    """Convolution as one 2-D matmul over shifted, strided copies of the input (im2col).

    The patches are flattened to a [pixels, k*k*Cin] matrix first: a matmul with 4-D operands
    differentiates into a weight gradient that XLA:CPU (jaxlib 0.10.2) runs several times
    slower than the same 2-D one.
    x: [B,H,W,Cin], kernel: [k,k,Cin,Cout] (HWIO) -> [B,out_h,out_w,Cout].
    """
    k, _, cin, cout = kernel.shape
    patches = jnp.concatenate(window_views(x, k, strides, pads), axis=-1)
    rows = patches.reshape(-1, k * k * cin) @ kernel.reshape(k * k * cin, cout)
    return rows.reshape(*patches.shape[:3], cout)


def same_conv_as_matmul(x: jnp.ndarray, kernel: jnp.ndarray, strides: int = 1) -> jnp.ndarray:
    """'SAME' convolution by ``conv_as_matmul``.

    XLA:CPU (jaxlib 0.10.2) runs a 3x3 convolution 10-70x below its usual speed when the
    output map has a side of 2 (forward for stride 1, input gradient for stride 2: the last
    stage at 64 px input), so ConvBN sends maps smaller than the kernel here.
    x: [B,H,W,Cin], kernel: [k,k,Cin,Cout] (HWIO) -> [B,ceil(H/s),ceil(W/s),Cout].
    """
    k = kernel.shape[0]
    pads = lax.padtype_to_pads(x.shape[1:3], (k, k), (strides, strides), "SAME")
    return conv_as_matmul(x, kernel, strides, pads)


def pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: int = 1) -> jnp.ndarray:
    """1x1 convolution as a 2-D matmul: [B,H,W,Cin] x [1,1,Cin,Cout] -> [B,H/s,W/s,Cout].

    Same values as the convolution. On XLA:CPU (jaxlib 0.10.2) the weight gradient of a 1x1
    convolution runs 5-10x slower than the equivalent matmul (X^T G), and 1x1 is the
    bottleneck blocks' most common layer. GPU/TPU compilers lower a 1x1 convolution to the
    same matmul, so one formulation serves every platform.
    """
    if strides > 1:
        x = x[:, ::strides, ::strides]
    cin, cout = kernel.shape[2:]
    rows = x.reshape(-1, cin) @ kernel.reshape(cin, cout)
    return rows.reshape(*x.shape[:3], cout)


def max_pool_3x3_stride2(x: jnp.ndarray) -> jnp.ndarray:
    """Keras' ZeroPadding2D(1) + MaxPooling2D(3, strides=2): [B,H,W,C] -> [B,ceil(H/2),ceil(W/2),C].

    Two separable 1-D max pools (rows, then columns) over 3 strided views each: the same
    values as a reduce-window, but the gradient avoids XLA:CPU's select-and-scatter (2-4x
    slower), and 3+3 views cost less than the 9 of a direct 3x3 window (backward on the
    stem's map at 128 px: ~80 -> ~15 ms).
    """
    for axis in (1, 2):
        out = (x.shape[axis] - 1) // 2 + 1
        pad = [(0, 0)] * 4
        pad[axis] = (1, 1)
        padded = jnp.pad(x, pad)
        views = [
            lax.slice_in_dim(padded, i, i + 2 * out - 1, stride=2, axis=axis) for i in range(3)
        ]
        x = functools.reduce(jnp.maximum, views)
    return x


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
        im2col: bool = False,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
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
        self.strides = strides
        self.kernel_size = kernel_size
        # Explicit padding, for the matmul paths (pointwise convs have none).
        self.pads = None if isinstance(padding, str) else tuple(map(tuple, padding))
        # im2col: always run as a matmul over patches (the stem: 3 input channels, where the
        # convolution's weight gradient is the slow part; see ResNet).
        self.im2col = im2col
        # Output maps smaller than the kernel take the matmul path (see same_conv_as_matmul).
        self.matmul_below_size = kernel_size if padding == "SAME" and kernel_size > 1 else 0
        self.norm = nnx.BatchNorm(
            out_features,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            scale_init=nnx.initializers.zeros if zero_init_scale else nnx.initializers.ones,
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        dtype = self.conv.dtype
        if self.kernel_size == 1:
            kernel = self.conv.kernel[...].astype(dtype)
            return self.norm(pointwise_conv(x.astype(dtype), kernel, self.strides))
        if self.im2col and self.pads is not None:
            kernel = self.conv.kernel[...].astype(dtype)
            return self.norm(conv_as_matmul(x.astype(dtype), kernel, self.strides, self.pads))
        out_sides = [-(-side // self.strides) for side in x.shape[1:3]]
        if min(out_sides) < self.matmul_below_size:
            x, kernel = x.astype(dtype), self.conv.kernel[...].astype(dtype)
            return self.norm(same_conv_as_matmul(x, kernel, self.strides))
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
            im2col=True,
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
