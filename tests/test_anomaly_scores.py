"""Pooled image scores from anomaly maps: known values on hand-made maps, scipy's smoothing."""

import jax
import numpy as np
import pytest
from scipy import ndimage

from jaxfundus.anomaly_scores import gaussian_smooth, pool_map, top_k_count


def spike(height=10, width=10, at=(3, 4), value=1.0) -> np.ndarray:
    maps = np.zeros((1, height, width), np.float32)
    maps[0, at[0], at[1]] = value
    return maps


def test_unsmoothed_pooling_of_a_single_spike():
    maps = spike()
    assert float(pool_map(maps, "mean")[0]) == pytest.approx(1 / 100)
    assert float(pool_map(maps, "max", sigma=0.0)[0]) == pytest.approx(1.0)
    # 2% of 100 pixels: the spike and one zero.
    assert float(pool_map(maps, "top-k", k_percent=2.0, sigma=0.0)[0]) == pytest.approx(0.5)
    assert float(pool_map(maps, "top-k", k_percent=100.0, sigma=0.0)[0]) == pytest.approx(0.01)


def test_smoothed_max_of_a_spike_is_the_kernel_centre():
    sigma = 1.0
    offsets = np.arange(-4, 5)  # int(4 * sigma + 0.5) taps either side
    centre_1d = 1 / np.exp(-0.5 * (offsets / sigma) ** 2).sum()
    assert float(pool_map(spike(), "max", sigma=sigma)[0]) == pytest.approx(centre_1d**2, rel=1e-5)


def test_constant_map_pools_to_the_constant():
    maps = np.full((2, 8, 12), 0.3, np.float32)
    for method in ("mean", "max", "top-k"):
        np.testing.assert_allclose(pool_map(maps, method, k_percent=5.0, sigma=1.5), [0.3, 0.3],
                                   rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_smoothing_matches_scipy(sigma):
    maps = np.random.default_rng(0).random((3, 16, 20)).astype(np.float32)
    expected = np.stack([ndimage.gaussian_filter(m, sigma, mode="nearest") for m in maps])
    np.testing.assert_allclose(gaussian_smooth(maps, sigma), expected, rtol=1e-5, atol=1e-6)


def test_each_image_is_pooled_on_its_own():
    maps = np.concatenate([spike(at=(0, 0), value=2.0), spike(at=(9, 9), value=0.5),
                           np.zeros((1, 10, 10), np.float32)])
    np.testing.assert_allclose(pool_map(maps, "max", sigma=0.0), [2.0, 0.5, 0.0])
    np.testing.assert_allclose(pool_map(maps, "mean"), [0.02, 0.005, 0.0])


def test_top_k_ranks_images_by_their_worst_region_not_their_mean():
    rng = np.random.default_rng(1)
    diffuse = rng.uniform(0.2, 0.3, (1, 32, 32)).astype(np.float32)
    lesion = np.full((1, 32, 32), 0.2, np.float32)
    lesion[0, 10:14, 10:14] = 1.0
    maps = np.concatenate([diffuse, lesion])
    mean = np.asarray(pool_map(maps, "mean"))
    top = np.asarray(pool_map(maps, "top-k", k_percent=1.0, sigma=1.0))
    assert mean[0] > mean[1] and top[1] > top[0]


def test_top_k_count():
    assert top_k_count(100, 2.0) == 2
    assert top_k_count(4096, 1.0) == 41
    assert top_k_count(10, 0.1) == 1


def test_jit_inside_a_caller():
    maps = spike()
    scores = jax.jit(lambda m: pool_map(m, "top-k", k_percent=5.0, sigma=1.0))(maps)
    assert scores.shape == (1,) and scores.dtype == np.float32


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "median"}, "not one of mean, max, top-k"),
    ({"method": "top-k", "k_percent": 0.0}, "k_percent"),
    ({"method": "max", "sigma": -1.0}, "sigma"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pool_map(spike(), **kwargs)


def test_maps_must_be_three_dimensional():
    with pytest.raises(ValueError, match=r"float\[B,H,W\]"):
        pool_map(np.zeros((10, 10), np.float32), "max")
