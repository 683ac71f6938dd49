"""`invoke bench` plumbing: the Trainer's own step compiles, runs and reports figures that are
consistent with each other and with XLA's count of the model's own forward pass.

Speed itself is not asserted (shared CI machines are too noisy); docs/performance.md has the
measured table.
"""

import resource
import time

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxfundus import bench
from jaxfundus.models.registry import build_classifier
from jaxfundus.train.mesh import DataParallel


def _forward_flops(model_name: str, image_size: int, batch_size: int) -> float:
    """XLA's FLOP count of one training-mode forward pass of the classifier."""
    model = nnx.eval_shape(lambda: build_classifier(model_name, 2, rngs=nnx.Rngs(0)))
    model.train()
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32)
    cost = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, images).compile()
    cost = cost.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.mark.slow
def test_bench_train_step_reports_consistent_figures():
    start = time.perf_counter()
    result = bench.bench_train_step("resnet18", 32, 2, steps=2, warmup=1, peak_matmul_size=256)
    elapsed = time.perf_counter() - start
    assert result["devices"] == DataParallel().describe()
    assert result["img_per_s"] == pytest.approx(2 / result["step_s"])
    assert result["achieved_flops_per_s"] == pytest.approx(
        result["flops_per_step"] / result["step_s"])
    assert result["mfu"] == pytest.approx(
        result["achieved_flops_per_s"] / result["matmul_peak_flops_per_s"])
    # Compilation and the three steps ran inside the call, each step waited for: a step timed
    # without waiting would look faster than the measured matmul peak allows.
    assert result["compile_s"] + 3 * result["step_s"] < elapsed
    assert result["mfu"] < 1.5
    # A training step: the forward pass, about twice that backward, then the optimizer update
    # of 11M parameters (XLA counts 4.1x the forward pass at this size; 1x would be no training).
    forward = _forward_flops("resnet18", 32, 2)
    assert 3 * forward < result["flops_per_step"] < 5 * forward
    peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert 0.2 < result["peak_rss_gib"] <= peak_now  # jax and a compiled ResNet-18: > 200 MB
