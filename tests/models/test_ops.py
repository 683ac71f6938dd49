"""The fast op formulations give the textbook layers' values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxfundus.models.ops import (
    BatchNorm,
    Conv,
    ConvTranspose,
    batch_norm_train,
    conv2d,
    conv_as_matmul,
    conv_transpose,
    conv_transpose_as_matmul,
    max_pool_3x3_stride2,
    pointwise_conv,
    window_views,
)

DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def xla_conv(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, (strides, strides), pads,
                                    dimension_numbers=DIMENSIONS)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def values_and_gradients(op, x, kernel, cotangent, strides, pads):
    """(op(x, kernel), d/dx, d/dkernel) for the given output cotangent, in one compiled call."""
    out, pullback = jax.vjp(lambda x, k: op(x, k, strides, pads), x, kernel)
    return (out, *pullback(cotangent))


def _rngs() -> nnx.Rngs:
    """The same initial values for our layer and nnx's; rbg compiles faster than threefry."""
    return nnx.Rngs(jax.random.key(0, impl="rbg"))


def random(shape, seed=0, scale=1.0, shift=0.0):
    return jnp.asarray(np.random.default_rng(seed).normal(shift, scale, shape), jnp.float32)


@pytest.mark.parametrize(
    ("height", "width", "kernel_size", "strides", "pads"),
    [
        (9, 7, 3, 1, ((1, 1), (1, 1))),  # ResNet's 3x3 'SAME'
        (2, 5, 3, 1, ((1, 1), (1, 1))),  # maps smaller than the kernel
        (8, 9, 3, 2, ((0, 1), (1, 1))),  # strided, asymmetric 'SAME'
        (16, 16, 7, 2, ((3, 3), (3, 3))),  # the stem
    ],
)
def test_conv_formulations_match_xla_conv_values_and_gradients(
    height, width, kernel_size, strides, pads
):
    x = random((2, height, width, 5))
    kernel = random((kernel_size, kernel_size, 5, 4), seed=1, scale=0.2)
    cotangent = random(xla_conv(x, kernel, strides, pads).shape, seed=2)
    expected = values_and_gradients(xla_conv, x, kernel, cotangent, strides, pads)
    for conv in (conv_as_matmul, conv2d):
        actual = values_and_gradients(conv, x, kernel, cotangent, strides, pads)
        for got, want in zip(actual, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("height", "width", "kernel_size", "strides", "pads"),
    [
        (1, 1, 4, 1, ((3, 3), (3, 3))),  # the decoders' first layer: latent -> 4x4
        (4, 4, 4, 2, ((2, 2), (2, 2))),  # DCGAN upsampling: doubles the map
        (5, 3, 3, 2, ((1, 2), (0, 1))),  # odd kernel, asymmetric and cropping pads
    ],
)
def test_conv_transpose_matches_lax_values_and_gradients(height, width, kernel_size, strides,
                                                         pads):
    x = random((2, height, width, 3))
    kernel = random((kernel_size, kernel_size, 3, 4), seed=1, scale=0.2)

    def reference(x, kernel, strides, pads):
        return lax.conv_transpose(x, kernel, (strides, strides), pads,
                                  dimension_numbers=DIMENSIONS)

    cotangent = random(reference(x, kernel, strides, pads).shape, seed=2)
    expected = values_and_gradients(reference, x, kernel, cotangent, strides, pads)
    for op in (conv_transpose_as_matmul, conv_transpose):
        actual = values_and_gradients(op, x, kernel, cotangent, strides, pads)
        for got, want in zip(actual, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("ours", "theirs", "kwargs", "input_side"),
    [
        (Conv, nnx.Conv, dict(strides=2, padding=((1, 1), (1, 1)), use_bias=False), 8),
        (Conv, nnx.Conv, dict(strides=1, padding="VALID", use_bias=True), 4),
        (Conv, nnx.Conv, dict(strides=2, padding="SAME", use_bias=True), 7),
        (ConvTranspose, nnx.ConvTranspose, dict(strides=1, padding="VALID", use_bias=False), 1),
        (ConvTranspose, nnx.ConvTranspose,
         dict(strides=2, padding=((2, 2), (2, 2)), use_bias=True), 4),
    ],
)
def test_conv_modules_match_nnx_layers(ours, theirs, kwargs, input_side):
    """Drop-in for the nnx layer: same variables, outputs and gradients."""
    layers = [cls(3, 5, (4, 4), rngs=_rngs(), **kwargs) for cls in (ours, theirs)]
    x = random((2, input_side, input_side, 3))
    assert jax.tree.map(jnp.shape, nnx.state(layers[0])) == jax.tree.map(
        jnp.shape, nnx.state(layers[1]))
    (out, kernel_grad), (nnx_out, nnx_kernel_grad) = (
        _output_and_kernel_gradient(layer, x) for layer in layers)
    np.testing.assert_allclose(out, nnx_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel_grad, nnx_kernel_grad, rtol=1e-4, atol=1e-5)


@nnx.jit  # one compilation per layer instead of one per eager op
def _output_and_kernel_gradient(layer, x):
    grads = nnx.grad(lambda layer: jnp.sum(jnp.sin(layer(x))))(layer)
    return layer(x), grads.kernel[...]


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_pointwise_conv_module_matches_nnx_conv(padding):
    """Unpadded 1x1 Conv layers (ResNet's bottlenecks) take the matmul path."""
    layers = [cls(6, 4, (1, 1), strides=2, padding=padding, use_bias=False, rngs=_rngs())
              for cls in (Conv, nnx.Conv)]
    x = random((2, 9, 8, 6))
    np.testing.assert_allclose(layers[0](x), layers[1](x), rtol=1e-5, atol=1e-5)
    assert "convolution" not in jax.jit(layers[0]).lower(x).as_text()


@pytest.mark.parametrize("op", [conv2d, conv_transpose])
def test_gpu_and_tpu_keep_the_platform_convolution(op):
    x, kernel = random((1, 8, 8, 3)), random((3, 3, 3, 4), seed=1)
    pads = ((1, 1), (1, 1))
    step = jax.jit(jax.grad(lambda k: op(x, k, 2, pads).sum()))
    hlo = {platform: step.trace(kernel).lower(lowering_platforms=(platform,)).as_text()
           for platform in ("cpu", "cuda", "tpu")}
    assert "convolution" not in hlo["cpu"] and "dot_general" in hlo["cpu"]
    for platform in ("cuda", "tpu"):
        assert "convolution" in hlo[platform] and "dot_general" not in hlo[platform]


def test_pointwise_conv_and_separable_pool_match_reference():
    x = random((2, 9, 9, 4))
    kernel = random((1, 1, 4, 6), seed=1)
    np.testing.assert_allclose(
        pointwise_conv(x, kernel, 2), xla_conv(x, kernel, 2, "SAME"), rtol=1e-5, atol=1e-5
    )
    direct = np.max(np.stack(window_views(x, 3, 2, ((1, 1), (1, 1)))), axis=0)
    np.testing.assert_array_equal(max_pool_3x3_stride2(x), direct)
    # Zero padding (Keras' ZeroPadding2D) equals reduce-window's -inf padding after a ReLU.
    relu_out = jnp.maximum(random((2, 19, 20, 4)), 0)
    expected = nnx.max_pool(relu_out, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(max_pool_3x3_stride2(relu_out), expected)


def reference_batch_norm(x, scale, bias, epsilon):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) * lax.rsqrt(var + epsilon) * scale + bias, mean, var


def test_batch_norm_train_matches_autodiff_of_the_formula():
    # A large offset: the two-pass variance must not cancel.
    x = random((3, 5, 4, 6), scale=2.0, shift=50.0)
    scale, bias = random((6,), seed=1), random((6,), seed=2)
    for actual, expected in zip(batch_norm_train(x, scale, bias, 1e-5),
                                reference_batch_norm(x, scale, bias, 1e-5), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)

    weights = random(x.shape, seed=3)

    def loss(norm):
        return lambda x, s, b: jnp.sum(jnp.sin(norm(x, s, b, 1e-5)[0]) * weights)

    actual = jax.jit(jax.grad(loss(batch_norm_train), argnums=(0, 1, 2)))(x, scale, bias)
    expected = jax.jit(jax.grad(loss(reference_batch_norm), argnums=(0, 1, 2)))(x, scale, bias)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("use_scale", [True, False])
def test_batchnorm_module_matches_nnx_batchnorm(use_scale):
    """Same outputs, gradients and running statistics as nnx.BatchNorm, train and eval."""
    x = random((4, 3, 3, 8), shift=1.0)
    ours = BatchNorm(8, momentum=0.9, use_scale=use_scale, rngs=_rngs())
    theirs = nnx.BatchNorm(8, momentum=0.9, use_scale=use_scale, rngs=_rngs())

    def loss(model, x):
        return jnp.sum(jnp.cos(model(x)))

    grads = [nnx.jit(nnx.grad(loss, argnums=(0, 1)))(model, x) for model in (ours, theirs)]
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5)
    for name in ("scale", "bias") if use_scale else ("bias",):
        np.testing.assert_allclose(
            getattr(grads[0][0], name)[...], getattr(grads[1][0], name)[...], rtol=1e-4, atol=1e-5
        )
    for stat in ("mean", "var"):
        np.testing.assert_allclose(getattr(ours, stat)[...], getattr(theirs, stat)[...],
                                   rtol=1e-5, atol=1e-6)
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
