"""Small Keras-example style CNN, as the study trained on full-size fundus images."""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxfundus.models import layers


def conv_block(
    in_features: int, out_features: int, *, use_batchnorm: bool, dtype: jnp.dtype, rngs: nnx.Rngs
) -> layers.ConvNormAct:
    """Conv 3x3 'same' -> [BatchNorm] -> ReLU: [B,H,W,Cin] -> [B,H,W,Cout]."""
    conv = layers.conv(
        in_features,
        out_features,
        3,
        layer=nnx.Conv,
        use_bias=not use_batchnorm,  # a bias before BN is cancelled by its mean subtraction
        kernel_init=layers.KERAS_KERNEL_INIT,
        dtype=dtype,
        rngs=rngs,
    )
    if not use_batchnorm:
        return layers.ConvNormAct(conv, activation=nnx.relu)
    return layers.conv_bn(
        conv, epsilon=layers.KERAS_BN_EPSILON, activation=nnx.relu, dtype=dtype, rngs=rngs
    )


class SimpleCNN(layers.Classifier):
    """[Conv block -> MaxPool 2x2] x n -> global average pool -> dense-ReLU -> dropout -> dense.

    Global average pooling (instead of Flatten) makes any input size work, including
    non-square full-size images such as 768x1024.

    Input: float32[B, H, W, in_channels] (H, W >= 2**len(features)).
    Output: float32[B, num_outputs] logits, whatever the compute ``dtype``.
    ``features``: [B, H/2**n, W/2**n, features[-1]] in the compute ``dtype``.
    """

    def __init__(
        self,
        num_outputs: int,
        *,
        features: Sequence[int] = (32, 64, 128),
        hidden_features: int = 128,
        dropout_rate: float = 0.5,
        use_batchnorm: bool = False,
        in_channels: int = 3,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        widths = [in_channels, *features]
        self.blocks = nnx.List(
            conv_block(cin, cout, use_batchnorm=use_batchnorm, dtype=dtype, rngs=rngs)
            for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )
        self.hidden = layers.dense(
            widths[-1],
            hidden_features,
            kernel_init=layers.KERAS_KERNEL_INIT,
            dtype=dtype,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = layers.logits_head(hidden_features, num_outputs, rngs=rngs)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        for block in self.blocks:
            x = nnx.max_pool(block(x), (2, 2), strides=(2, 2))
        return x

    def classify(self, features: jnp.ndarray) -> jnp.ndarray:
        """[B,h,w,F] -> float32[B, num_outputs]: global average pool (float32) -> dense-ReLU
        -> dropout -> head."""
        x = nnx.relu(self.hidden(layers.global_average_pool(features)))
        return self.head(self.dropout(x))
