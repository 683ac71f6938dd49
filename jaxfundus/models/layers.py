"""The building blocks every model here is made of, with the settings they share bound once.

What all models share is fixed here: parameters stored in float32 whatever the compute dtype,
BatchNorm momentum 0.9, no conv bias in front of a BatchNorm, logits in float32. What differs
per model (kernel initialiser, BatchNorm epsilon, conv implementation) each model binds once,
with ``functools.partial`` over these builders.

Classifiers split into ``features`` (the convolutional backbone) and ``classify`` (pooling and
head), the cut that Grad-CAM and ImageNet weight conversion need.
"""

import functools
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from jaxfundus.models import ops

# Master weights stay float32 under a bfloat16 compute dtype (mixed precision).
PARAM_DTYPE = jnp.float32
# Keras' default kernel initialiser (nnx's own default is LeCun normal).
KERAS_KERNEL_INIT = nnx.initializers.glorot_uniform()
# PyTorch's momentum (0.1 there = 0.9 in nnx) for every model: Keras' 0.99 needs hundreds of
# steps before eval-mode statistics mean anything, and our CPU runs train for ~100.
BN_MOMENTUM = 0.9
KERAS_BN_EPSILON = 1e-3
TORCH_BN_EPSILON = 1e-5

Activation = Callable[[jnp.ndarray], jnp.ndarray]


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
    """LeakyReLU with DCGAN's slope 0.2 (a module-level function, so model graphs compare equal)."""
    return nnx.leaky_relu(x, 0.2)


def check_image_size(image_size: int, minimum: int) -> None:
    """Raise ValueError unless ``image_size`` is a power of two >= ``minimum``."""
    if image_size < minimum or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= {minimum}, got {image_size}")


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int | tuple[int, int],
    *,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    layer: type[nnx.Conv] | type[nnx.ConvTranspose] = ops.Conv,
    use_bias: bool = False,
    **options,
) -> nnx.Conv | nnx.ConvTranspose:
    """A 2-D ``layer`` (``ops.Conv`` unless given) with float32 parameters.

    An int ``kernel_size`` means square. No bias unless asked: a BatchNorm usually follows,
    and its mean subtraction cancels a bias. ``options`` (strides, padding, kernel_init)
    go to ``layer``; it maps [B,H,W,in_features] to [B,H',W',out_features] in ``dtype``.
    """
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    return layer(
        in_features,
        out_features,
        kernel_size,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        rngs=rngs,
        **options,
    )


conv_transpose = functools.partial(conv, layer=ops.ConvTranspose)
# DCGAN's resampling layers (GANomaly, the VAE): a 4x4/2 conv padded by 1 halves the size
# exactly; a 4x4/2 transposed conv whose dilated input is padded by 2 (= kernel - 1 - torch's
# padding 1, as torch's ConvTranspose2d(4, 2, padding=1)) doubles it.
downsample_conv = functools.partial(conv, kernel_size=4, strides=2, padding=((1, 1), (1, 1)))
upsample_conv = functools.partial(
    conv_transpose, kernel_size=4, strides=2, padding=((2, 2), (2, 2))
)


def batch_norm(
    features: int, *, epsilon: float, dtype: jnp.dtype, rngs: nnx.Rngs, **options
) -> ops.BatchNorm:
    """``ops.BatchNorm`` with momentum ``BN_MOMENTUM``; ``options`` (scale_init, use_scale)
    go to it."""
    return ops.BatchNorm(
        features,
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        rngs=rngs,
        **options,
    )


def dense(
    in_features: int, out_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs, **options
) -> nnx.Linear:
    """``nnx.Linear`` with float32 parameters, computing in ``dtype``; ``options`` (kernel_init)
    go to it."""
    return nnx.Linear(
        in_features, out_features, dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs, **options
    )


def logits_head(in_features: int, num_outputs: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """A classifier's output layer, Keras-initialised and run in float32 whatever the model's
    compute dtype: logits feed the loss, and the layer is tiny."""
    return dense(
        in_features, num_outputs, dtype=jnp.float32, kernel_init=KERAS_KERNEL_INIT, rngs=rngs
    )


def global_average_pool(x: jnp.ndarray) -> jnp.ndarray:
    """[B,H,W,C] (any dtype) -> float32[B,C], accumulated in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)


class ConvNormAct(nnx.Module):
    """conv -> BatchNorm (unless None) -> activation (unless None), the unit all models stack.

    Its variables sit under ``conv`` and ``norm``: checkpoints and weight converters rely on
    those paths.
    """

    def __init__(
        self,
        conv: nnx.Module,
        norm: nnx.Module | None = None,
        activation: Activation | None = None,
    ):
        self.conv = conv
        self.norm = norm
        self.activation = activation

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.activation is None else self.activation(x)


def conv_bn(
    conv: nnx.Conv | nnx.ConvTranspose,
    *,
    epsilon: float,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    activation: Activation | None = None,
    **norm_options,
) -> ConvNormAct:
    """``conv`` -> a ``batch_norm`` over its output channels (``norm_options`` go to it)
    -> ``activation``."""
    norm = batch_norm(conv.out_features, epsilon=epsilon, dtype=dtype, rngs=rngs, **norm_options)
    return ConvNormAct(conv, norm, activation)


class Classifier(nnx.Module):
    """A convolutional backbone (``features``) and a head (``classify``).

    ``model(x) == model.classify(model.features(x))``. Grad-CAM differentiates ``classify``
    with respect to the feature map; weight converters fill the two parts separately.
    Subclasses define ``features`` and a ``head`` (``logits_head``).
    """

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """float32[B,H,W,C] images -> [B,h,w,F]: the last convolutional block's output, before
        global pooling, in the compute dtype."""
        raise NotImplementedError(f"{type(self).__name__} must define features()")

    def classify(self, features: jnp.ndarray) -> jnp.ndarray:
        """[B,h,w,F] feature map -> float32[B, num_outputs] logits: global average pooling
        (in float32), then the head."""
        return self.head(global_average_pool(features))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """float32[B,H,W,C] images -> float32[B, num_outputs] logits."""
        return self.classify(self.features(x))
