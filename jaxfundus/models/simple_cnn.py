"""Small Keras-example style CNN, as the study trained on full-size fundus images."""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxfundus.models.ops import BatchNorm

# Keras BatchNormalization epsilon; momentum 0.9 (PyTorch's) so short runs get usable
# eval-mode statistics.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


class ConvBlock(nnx.Module):
    """Conv 3x3 'same' -> [BatchNorm] -> ReLU -> MaxPool 2x2: [B,H,W,Cin] -> [B,H/2,W/2,Cout]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_batchnorm: bool,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_features,
            out_features,
            (3, 3),
            use_bias=not use_batchnorm,  # a bias before BN is cancelled by its mean subtraction
            kernel_init=nnx.initializers.glorot_uniform(),
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        self.norm = (
            BatchNorm(
                out_features,
                momentum=BN_MOMENTUM,
                epsilon=BN_EPSILON,
                dtype=dtype,
                param_dtype=jnp.float32,
                rngs=rngs,
            )
            if use_batchnorm
            else None
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return nnx.max_pool(nnx.relu(x), (2, 2), strides=(2, 2))


class SimpleCNN(nnx.Module):
    """Conv blocks -> global average pool -> dense-ReLU -> dropout -> dense logits.

    Global average pooling (instead of Flatten) makes any input size work, including
    non-square full-size images such as 768x1024.

    Input: float32[B, H, W, in_channels] (H, W >= 2**len(features)).
    Output: float32[B, num_outputs] logits, whatever the compute ``dtype``.
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
            ConvBlock(cin, cout, use_batchnorm=use_batchnorm, dtype=dtype, rngs=rngs)
            for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )
        self.hidden = nnx.Linear(
            widths[-1],
            hidden_features,
            kernel_init=nnx.initializers.glorot_uniform(),
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        # The output layer runs in float32: logits feed the loss, and it is tiny.
        self.head = nnx.Linear(
            hidden_features,
            num_outputs,
            kernel_init=nnx.initializers.glorot_uniform(),
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for block in self.blocks:
            x = block(x)
        x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
        x = self.dropout(nnx.relu(self.hidden(x)))
        return self.head(x)
