"""`invoke bench` plumbing: the Trainer's own step compiles, runs and reports sane figures.

Speed itself is not asserted (shared CI machines are too noisy); docs/performance.md has the
measured table.
"""

import math

import jax.numpy as jnp
import numpy as np

from jaxfundus import bench
from jaxfundus.models.resnet import max_pool_3x3_stride2, pointwise_conv, window_views


def test_bench_train_step_reports_figures():
    result = bench.bench_train_step("resnet18", 32, 2, steps=1, warmup=1, peak_matmul_size=256)
    assert result["img_per_s"] > 0
    assert result["compile_s"] > 0
    assert math.isfinite(result["flops_per_step"]) and result["flops_per_step"] > 0
    assert result["matmul_peak_flops_per_s"] > 0
    assert result["peak_rss_gib"] > 0


def test_pointwise_conv_and_pool_match_reference():
    """The matmul / separable formulations the benchmark relies on keep the layer's values."""
    from jax import lax

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 4)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((1, 1, 4, 6)), jnp.float32)
    expected = lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(pointwise_conv(x, kernel, 2), expected, rtol=1e-5, atol=1e-5)
    direct = np.max(np.stack(window_views(x, 3, 2, ((1, 1), (1, 1)))), axis=0)
    np.testing.assert_array_equal(max_pool_3x3_stride2(x), direct)
