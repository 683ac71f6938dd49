"""DRAEM (Zavrtanik et al., ICCV 2021): a reconstructive and a discriminative sub-network.

The reconstructive network (an encoder-decoder without skips) learns to give back the normal
picture under a synthetic anomaly; the discriminative network (a U-Net) sees the input beside
that reconstruction and segments what differs. Trained on normal images with synthetic
anomalies pasted in (`jaxfundus.synthetic.anomalies`), with `draem_loss`.

Same structure as the paper's networks (3x3 conv-BN-ReLU pairs, 2x2 max pooling, widths doubling
to the bottleneck), scaled down for CPUs: the paper's base widths are 128 (reconstructive) and 64
(discriminative) at 256 px; `DRAEM()`'s defaults are 16 and 16 with 4 poolings for 64-128 px.
Deliberate differences: a learned 2x2 up-conv instead of bilinear upsampling + 3x3 conv (a
ninth of that layer's cost), one anomaly logit per pixel with a sigmoid instead of two classes
with a softmax (the same model for two classes), and the convolutions and BatchNorm of
`jaxfundus.models.ops` (fast gradients on CPU).

Sizes at the defaults (widths 16-32-64-128-128 in both sub-networks, 3 channels): parameters
1.09 M reconstructive + 1.29 M discriminative = 2.38 M (the paper's: 97 M); a training step
costs 1.98 GFLOP per 64 px image (XLA's count, forward and backward), 4x that at 128 px;
recon/seg widths 8/8: 0.60 M parameters, 0.52 GFLOP per 64 px image.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxfundus.models.losses import focal_loss, reconstruction_loss
from jaxfundus.models.ops import BatchNorm, Conv, ConvTranspose

# torch's BatchNorm2d defaults (momentum 0.1 there = 0.9 in nnx), as the paper's code.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
MIN_IMAGE_SIZE = 32


def check_draem_size(image_size: int, levels: int) -> None:
    """ValueError unless `image_size` is a power of two >= 32 that `levels` poolings divide."""
    if image_size < MIN_IMAGE_SIZE or image_size & (image_size - 1):
        raise ValueError(f"DRAEM image_size must be a power of two >= {MIN_IMAGE_SIZE}, "
                         f"got {image_size}")
    if image_size >> levels < 2:
        raise ValueError(f"{levels} poolings leave less than 2x2 of a {image_size} px image; "
                         "use fewer levels or larger images")


def widths(base_features: int, levels: int) -> list[int]:
    """Channels at each of the levels + 1 resolutions: doubling, the last two equal (paper)."""
    return [base_features * 2 ** min(i, levels - 1) for i in range(levels + 1)]


class ConvNormReLU(nnx.Module):
    """3x3 conv (no bias) -> BatchNorm -> ReLU: [B,S,S,Cin] -> [B,S,S,Cout]."""

    def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        self.conv = Conv(in_features, out_features, (3, 3), padding=((1, 1), (1, 1)),
                         use_bias=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.norm = BatchNorm(out_features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                              dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nnx.relu(self.norm(self.conv(x)))


class DoubleConv(nnx.Module):
    """Two ConvNormReLU: [B,S,S,Cin] -> [B,S,S,Cout]."""

    def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        self.first = ConvNormReLU(in_features, out_features, dtype=dtype, rngs=rngs)
        self.second = ConvNormReLU(out_features, out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.second(self.first(x))


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """[B,S,S,C] -> [B,S/2,S/2,C]: the maximum of each 2x2 block (a reshape, no reduce-window,
    whose select-and-scatter gradient is slow on XLA:CPU)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UpConv(nnx.Module):
    """2x2 stride-2 transposed conv (no bias) -> BatchNorm -> ReLU: [B,S,S,Cin] -> [B,2S,2S,Cout].

    A learned upsampling (U-Net's up-conv): a ninth of the multiply-adds of the paper's
    upsample + 3x3 conv at the doubled resolution, the costliest layer of each decoder level.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        self.conv = ConvTranspose(in_features, out_features, (2, 2), strides=2, padding="VALID",
                                  use_bias=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.norm = BatchNorm(out_features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                              dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nnx.relu(self.norm(self.conv(x)))


class ReconstructiveNetwork(nnx.Module):
    """Encoder-decoder without skip connections (so it cannot copy an anomaly through).

    [B,S,S,C] -> [B,S,S,C] (linear output on the input's scale). Encoder: DoubleConv at each of
    `levels` + 1 resolutions with 2x2 max pooling between; decoder: upsample, ConvNormReLU,
    DoubleConv per level; a final 3x3 conv to C channels.
    """

    def __init__(self, channels: int = 3, base_features: int = 16, levels: int = 4, *,
                 dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        w = widths(base_features, levels)
        self.encoder = nnx.List(DoubleConv(cin, cout, **kw)
                                for cin, cout in zip([channels, *w[:-1]], w, strict=True))
        self.up = nnx.List(UpConv(w[i + 1], w[i], **kw) for i in reversed(range(levels)))
        self.decoder = nnx.List(DoubleConv(w[i], w[i], **kw) for i in reversed(range(levels)))
        self.to_image = Conv(w[0], channels, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                             param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, block in enumerate(self.encoder):
            x = block(max_pool_2x2(x) if i else x)
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(up(x))
        return self.to_image(x).astype(jnp.float32)


class DiscriminativeNetwork(nnx.Module):
    """U-Net: concat(input, reconstruction) [B,S,S,2C] -> anomaly logits float32[B,S,S].

    Encoder as the reconstructive one; each decoder level upsamples, applies ConvNormReLU,
    concatenates the encoder's map of that resolution and applies a DoubleConv.
    """

    def __init__(self, in_features: int = 6, base_features: int = 16, levels: int = 4, *,
                 dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, rngs=rngs)
        w = widths(base_features, levels)
        self.encoder = nnx.List(DoubleConv(cin, cout, **kw)
                                for cin, cout in zip([in_features, *w[:-1]], w, strict=True))
        self.up = nnx.List(UpConv(w[i + 1], w[i], **kw) for i in reversed(range(levels)))
        self.decoder = nnx.List(DoubleConv(2 * w[i], w[i], **kw) for i in reversed(range(levels)))
        self.to_logit = Conv(w[0], 1, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                             param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(max_pool_2x2(x) if i else x)
            skips.append(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1]), strict=True):
            x = block(jnp.concatenate([up(x), skip], axis=-1))
        return self.to_logit(x)[..., 0].astype(jnp.float32)


class DRAEM(nnx.Module):
    """Both sub-networks: x [B,S,S,C] (normalised to [-1, 1]) -> (reconstruction float32[B,S,S,C],
    anomaly logits float32[B,S,S]); `anomaly_map` gives the per-pixel probability.

    S a power of two >= 32. The logits see the reconstruction without a stop-gradient, so the
    segmentation loss also trains the reconstructive network (the paper's joint training).
    """

    def __init__(self, image_size: int, channels: int = 3, recon_features: int = 16,
                 seg_features: int = 16, levels: int = 4, *, dtype: jnp.dtype = jnp.float32,
                 rngs: nnx.Rngs):
        check_draem_size(image_size, levels)
        self.reconstructive = ReconstructiveNetwork(channels, recon_features, levels,
                                                    dtype=dtype, rngs=rngs)
        self.discriminative = DiscriminativeNetwork(2 * channels, seg_features, levels,
                                                    dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        recon = self.reconstructive(x)
        joint = jnp.concatenate([x.astype(recon.dtype), recon], axis=-1)
        return recon, self.discriminative(joint.astype(x.dtype))

    def anomaly_map(self, x: jnp.ndarray) -> jnp.ndarray:
        """[B,S,S,C] -> float32[B,S,S] in [0, 1]: the probability that each pixel is anomalous."""
        return jax.nn.sigmoid(self(x)[1])


def draem_loss(model: DRAEM, augmented: jnp.ndarray, clean: jnp.ndarray, mask: jnp.ndarray, *,
               focal_gamma: float = 2.0) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The paper's loss: L2 + (1 - SSIM) of the reconstruction against the clean picture, plus
    the focal loss of the logits against the anomaly mask.

    augmented, clean: float[B,S,S,C] in [-1, 1] (the picture with and without its synthetic
    anomaly; identical where none was pasted); mask: bool/float[B,S,S], 1 where it was pasted.
    Returns (total float32[], {"reconstruction", "focal"} float32[]).
    """
    recon, logits = model(augmented)
    rec = reconstruction_loss(recon, clean, data_range=2.0)
    focal = focal_loss(logits, mask, gamma=focal_gamma)
    return rec + focal, {"reconstruction": rec, "focal": focal}
