"""Image anomaly scores pooled from per-pixel anomaly maps, for any detector that makes maps
(GANomaly's and the VAE's |x - x'|, DRAEM's predicted anomaly probability).

The plain mean dilutes a small lesion over the whole picture; `max` and `top-k` look at the most
anomalous pixels, after a small Gaussian smoothing so that one noisy pixel does not decide.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

POOLINGS = ("mean", "max", "top-k")


def gaussian_smooth(maps: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """float[B,H,W] -> float32[B,H,W], Gaussian-blurred with edge replication at the borders.

    Taps reach int(4 * sigma + 0.5) pixels, so this equals
    scipy.ndimage.gaussian_filter(map, sigma, mode="nearest") per map. sigma = 0: unchanged.
    """
    maps = maps.astype(jnp.float32)
    radius = int(4 * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return maps
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    height, width = maps.shape[1:]
    padded = jnp.pad(maps, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    maps = sum(float(t) * padded[:, i : i + height] for i, t in enumerate(taps))
    padded = jnp.pad(maps, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    return sum(float(t) * padded[:, :, i : i + width] for i, t in enumerate(taps))


def top_k_count(num_pixels: int, k_percent: float) -> int:
    """How many pixels `top-k` averages: k_percent of them, rounded, at least one."""
    return max(int(round(num_pixels * k_percent / 100)), 1)


def check_pooling(method: str, k_percent: float, sigma: float) -> None:
    """ValueError naming the bad setting, for configs and command-line overrides."""
    if method not in POOLINGS:
        raise ValueError(f"image score pooling {method!r} is not one of {', '.join(POOLINGS)}")
    if not 0 < k_percent <= 100:
        raise ValueError(f"top-k k_percent must be in (0, 100], got {k_percent}")
    if not sigma >= 0:
        raise ValueError(f"smoothing sigma must be >= 0 pixels, got {sigma}")


@functools.partial(jax.jit, static_argnames=("method", "k_percent", "sigma"))
def pool_map(maps: jnp.ndarray, method: str = "mean", k_percent: float = 1.0,
             sigma: float = 1.0) -> jnp.ndarray:
    """Per-pixel anomaly maps float[B,H,W] -> image scores float32[B].

    mean: the plain mean (no smoothing). max: the maximum of the map smoothed by a Gaussian of
    `sigma` pixels. top-k: the mean of the top `k_percent` % of the smoothed map's pixels
    (`top_k_count`). Higher means more anomalous.
    """
    check_pooling(method, k_percent, sigma)
    if maps.ndim != 3:
        raise ValueError(f"pool_map expects maps float[B,H,W], got shape {maps.shape}")
    if method == "mean":
        return maps.astype(jnp.float32).mean(axis=(1, 2))
    flat = gaussian_smooth(maps, sigma).reshape(maps.shape[0], -1)
    if method == "max":
        return flat.max(axis=1)
    top, _ = jax.lax.top_k(flat, top_k_count(flat.shape[1], k_percent))
    return top.mean(axis=1)
