"""Convolution, pooling and BatchNorm formulations whose gradients XLA:CPU runs fast.

Every function returns the same values as the textbook layer (tests check each against it);
they differ in how XLA executes them. Measured on a 2-core AVX2 CPU with jaxlib 0.10.2, where
XLA:CPU's own convolution gradients are the slowest part of a ResNet training step (see
docs/performance.md). Where a formulation only pays off on CPU, ``lax.platform_dependent``
keeps the plain convolution for GPU/TPU inside the same jitted step.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Pads = Sequence[tuple[int, int]]
CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def window_views(x: jnp.ndarray, window: int, strides: int, pads: Pads) -> list[jnp.ndarray]:
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


def conv_as_matmul(x: jnp.ndarray, kernel: jnp.ndarray, strides: int, pads: Pads) -> jnp.ndarray:
    """Convolution as one 2-D matmul over shifted, strided copies of the input (im2col).

    The patches are flattened to a [pixels, k*k*Cin] matrix first: a matmul with 4-D operands
    differentiates into a weight gradient that XLA:CPU runs several times slower than the same
    2-D one. Forward plus both gradients of a 3x3 convolution at ResNet-50's shapes: 1.4-2.4x
    faster than XLA:CPU's convolution.
    x: [B,H,W,Cin], kernel: [k,k,Cin,Cout] (HWIO) -> [B,out_h,out_w,Cout].
    """
    k, _, cin, cout = kernel.shape
    patches = jnp.concatenate(window_views(x, k, strides, pads), axis=-1)
    rows = patches.reshape(-1, k * k * cin) @ kernel.reshape(k * k * cin, cout)
    return rows.reshape(*patches.shape[:3], cout)


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, strides: int, pads: Pads) -> jnp.ndarray:
    """Convolution without bias: im2col matmul on CPU, the platform's convolution elsewhere.

    x: [B,H,W,Cin], kernel: [k,k,Cin,Cout] (HWIO) -> [B,out_h,out_w,Cout].
    """
    pads = tuple(map(tuple, pads))

    def platform_conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return lax.conv_general_dilated(
            x, kernel, (strides, strides), pads, dimension_numbers=CONV_DIMENSIONS
        )

    def im2col(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return conv_as_matmul(x, kernel, strides, pads)

    return lax.platform_dependent(x, kernel, cpu=im2col, default=platform_conv)


def conv_transpose_as_matmul(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: int, pads: Pads
) -> jnp.ndarray:
    """``lax.conv_transpose`` (kernel not flipped) as one 2-D matmul plus an overlap-add.

    Each input pixel times each kernel tap is one row of x[pixels, Cin] @ kernel[Cin, k*k*Cout];
    tap (i, j) of input pixel (h, w) lands on output (s*h + pad - i, s*w + pad - j), a strided
    placement that ``lax.pad`` (interior padding, negative edges crop) writes. Its gradients
    are slices and 2-D matmuls, where XLA:CPU's transposed convolution and its gradients run
    as slow dilated convolutions.
    x: [B,H,W,Cin], kernel: [k,k,Cin,Cout] (HWIO), pads: the dilated input's padding as in
    ``lax.conv_transpose`` -> [B, (H-1)*s + 1 + pad_lo + pad_hi - k + 1, ..., Cout].
    """
    k, _, cin, cout = kernel.shape
    batch, height, width, _ = x.shape
    taps = x.reshape(-1, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, k * k * cout)
    taps = taps.reshape(batch, height, width, k, k, cout)
    dilated = ((height - 1) * strides + 1, (width - 1) * strides + 1)
    out = [side + lo + hi - k + 1 for side, (lo, hi) in zip(dilated, pads, strict=True)]
    total = None
    for i in range(k):
        for j in range(k):
            lows = (pads[0][0] - i, pads[1][0] - j)
            spatial = [
                (low, size - low - side, strides - 1)
                for low, size, side in zip(lows, out, dilated, strict=True)
            ]
            config = [(0, 0, 0), *spatial, (0, 0, 0)]
            placed = lax.pad(taps[:, :, :, i, j], jnp.zeros((), taps.dtype), config)
            total = placed if total is None else total + placed
    return total


def conv_transpose(x: jnp.ndarray, kernel: jnp.ndarray, strides: int, pads: Pads) -> jnp.ndarray:
    """Transposed convolution without bias: matmul + overlap-add on CPU, the platform's
    ``lax.conv_transpose`` elsewhere. Shapes as ``conv_transpose_as_matmul``."""
    pads = tuple(map(tuple, pads))

    def platform_conv_transpose(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return lax.conv_transpose(x, kernel, (strides, strides), pads,
                                  dimension_numbers=CONV_DIMENSIONS)

    def matmul(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return conv_transpose_as_matmul(x, kernel, strides, pads)

    return lax.platform_dependent(x, kernel, cpu=matmul, default=platform_conv_transpose)


def _square(values, name: str) -> int:
    values = (values,) * 2 if isinstance(values, int) else tuple(values)
    if len(set(values)) != 1:
        raise ValueError(f"{name} must be square, got {values}")
    return values[0]


def _run_layer(layer: nnx.Conv | nnx.ConvTranspose, x: jnp.ndarray, op, strides: int,
               pads: Pads) -> jnp.ndarray:
    """op(x, kernel, strides, pads) in the layer's compute dtype, plus its bias if it has one."""
    dtype = layer.dtype or x.dtype
    y = op(x.astype(dtype), layer.kernel[...].astype(dtype), strides, pads)
    return y if layer.bias is None else y + layer.bias[...].astype(y.dtype)


class Conv(nnx.Conv):
    """``nnx.Conv`` (same variables) for square 2-D kernels and strides, run through
    ``pointwise_conv`` (unpadded 1x1) or ``conv2d``. No dilation or feature groups."""

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        size, strides = _square(self.kernel_size, "kernel_size"), _square(self.strides, "strides")
        pads = self.padding
        if isinstance(pads, str):
            pads = lax.padtype_to_pads(x.shape[1:3], (size, size), (strides, strides), pads)
        if size == 1 and not any(low or high for low, high in pads):
            return _run_layer(self, x, lambda x, k, s, _: pointwise_conv(x, k, s), strides, pads)
        return _run_layer(self, x, conv2d, strides, pads)


class ConvTranspose(nnx.ConvTranspose):
    """``nnx.ConvTranspose`` (same variables, ``transpose_kernel=False``) for square 2-D
    kernels and strides with explicit padding or 'VALID', run through ``conv_transpose``."""

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        size, strides = _square(self.kernel_size, "kernel_size"), _square(self.strides, "strides")
        pads = self.padding
        if pads == "VALID":  # lax.conv_transpose's 'VALID': the full overlap
            pad_total = size + strides - 2 + max(size - strides, 0)
            pads = ((size - 1, pad_total - size + 1),) * 2
        elif isinstance(pads, str):
            raise ValueError(f"ConvTranspose padding {pads!r}: use 'VALID' or explicit pads")
        return _run_layer(self, x, conv_transpose, strides, pads)


def pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: int = 1) -> jnp.ndarray:
    """1x1 convolution as a 2-D matmul: [B,H,W,Cin] x [1,1,Cin,Cout] -> [B,H/s,W/s,Cout].

    On XLA:CPU the weight gradient of a 1x1 convolution runs 5-10x slower than the equivalent
    matmul (X^T G). GPU/TPU compilers lower a 1x1 convolution to the same matmul, so this one
    formulation serves every platform.
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(
    x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Training-mode BatchNorm over all but the last axis: (y, batch mean, batch variance).

    The same values and gradients as autodiff of ``(x - mean) * rsqrt(var + eps) * scale +
    bias``, with a hand-written backward pass: two passes over the activations (the per-channel
    sums, then dx = a*dy + b*(x - mean) + c) where autodiff materialises x - mean and the
    normalised x, and XLA:CPU spends more time in BatchNorm than PyTorch does.
    The variance is the two-pass mean((x - mean)^2), not E[x^2] - E[x]^2, which cancels.
    """
    return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _batch_norm_forward(x, scale, bias, epsilon):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    inv_std = lax.rsqrt(var + epsilon)
    gain = scale * inv_std
    y = x * gain + (bias - mean * gain)
    return (y, mean, var), (x, mean, inv_std, scale)


def _batch_norm_backward(epsilon, residuals, cotangents):
    del epsilon
    x, mean, inv_std, scale = residuals
    dy = cotangents[0]  # the batch statistics feed only the running averages (no gradient)
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    dbias = jnp.sum(dy, axes)
    dscale = jnp.sum(dy * (x - mean), axes) * inv_std  # sum(dy * x_normalised)
    gain = scale * inv_std
    dx = gain * dy - (gain * inv_std * dscale / count) * (x - mean) - gain * dbias / count
    return dx, dscale, dbias


batch_norm_train.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` (same variables, same eval mode) whose training mode runs
    ``batch_norm_train``: statistics in float32 and a fused backward pass.

    Normalises over every axis but the last; no masks.
    """

    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None) -> jnp.ndarray:
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average:
            return super().__call__(x, use_running_average=True)
        features = x.shape[-1]
        scale = self.scale[...] if self.scale is not None else jnp.ones(features, jnp.float32)
        bias = self.bias[...] if self.bias is not None else jnp.zeros(features, jnp.float32)
        y, mean, var = batch_norm_train(x.astype(jnp.float32), scale, bias, self.epsilon)
        # The running averages take no gradient (nnx.BatchNorm's convention too).
        mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
        self.mean[...] = self.momentum * self.mean[...] + (1 - self.momentum) * mean
        self.var[...] = self.momentum * self.var[...] + (1 - self.momentum) * var
        return y.astype(self.dtype or x.dtype)
