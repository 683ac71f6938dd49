"""Image losses shared by the reconstruction-based detectors: SSIM and the focal loss.

Pure jnp, jittable; SSIM's Gaussian window is applied as a sum of shifted slices (separable),
whose gradient XLA:CPU runs as cheap slices and adds rather than as a convolution gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW = 11  # the standard SSIM window (Wang et al. 2004), as DRAEM's
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """float32[size] normalised 1-D Gaussian, centred."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _filter_valid(x: jnp.ndarray, taps: np.ndarray) -> jnp.ndarray:
    """Separable 'valid' filtering of [B,H,W,C] over H and W: [B,H-k+1,W-k+1,C]."""
    k = len(taps)
    for axis in (1, 2):
        n = x.shape[axis] - k + 1
        x = sum(float(t) * jax.lax.slice_in_dim(x, i, i + n, axis=axis) for i, t in enumerate(taps))
    return x


def ssim(x: jnp.ndarray, y: jnp.ndarray, *, data_range: float = 2.0,
         window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> jnp.ndarray:
    """Mean structural similarity per image, Gaussian-weighted (Wang et al. 2004).

    x, y: float[B,H,W,C] with H, W >= window; data_range: max - min of the pixel scale (2 for
    images in [-1, 1]). Statistics are computed per channel over the 'valid' windows and the
    SSIM map is averaged over windows and channels: float32[B]. Equals
    skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False) at the default window.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim expects two float[B,H,W,C] arrays of one shape, got {x.shape} "
                         f"and {y.shape}")
    if min(x.shape[1:3]) < window:
        raise ValueError(f"ssim window {window} exceeds the image size {x.shape[1:3]}")
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    taps = gaussian_taps(window, sigma)
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x * mu_x
    var_y = _filter_valid(y * y, taps) - mu_y * mu_y
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
                / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)))
    return ssim_map.mean(axis=(1, 2, 3))


def reconstruction_loss(recon: jnp.ndarray, target: jnp.ndarray, *,
                        data_range: float = 2.0) -> jnp.ndarray:
    """DRAEM's reconstruction loss, mean L2 + (1 - SSIM), averaged over the batch: float32[].

    recon, target: float[B,H,W,C] on a scale of width `data_range`.
    """
    l2 = jnp.mean(jnp.square(recon.astype(jnp.float32) - target.astype(jnp.float32)))
    return l2 + 1.0 - jnp.mean(ssim(recon, target, data_range=data_range))


def focal_loss(logits: jnp.ndarray, targets: jnp.ndarray, *, gamma: float = 2.0,
               alpha: float | None = None) -> jnp.ndarray:
    """Binary focal loss (Lin et al. 2017) averaged over all elements: float32[].

    logits: float[...] (one logit per pixel, p = sigmoid(logit)); targets: the same shape,
    0/1 (bool or float). Each element costs -(1 - p_t)^gamma * log(p_t), where p_t is the
    probability of its true class; `alpha` weights positives by alpha and negatives by
    1 - alpha (None: no weighting). gamma = 0 without alpha is binary cross-entropy.
    """
    logits = logits.astype(jnp.float32)
    targets = targets.astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    # log p = -softplus(-logit), log(1 - p) = -softplus(logit): stable for large |logit|.
    positive = targets * (1 - p) ** gamma * jax.nn.softplus(-logits)
    negative = (1 - targets) * p**gamma * jax.nn.softplus(logits)
    if alpha is not None:
        positive, negative = alpha * positive, (1 - alpha) * negative
    return jnp.mean(positive + negative)
