"""`invoke bench` plumbing: the Trainer's own step compiles, runs and reports sane figures.

Speed itself is not asserted (shared CI machines are too noisy); docs/performance.md has the
measured table.
"""

import math

import pytest

from jaxfundus import bench


@pytest.mark.slow
def test_bench_train_step_reports_figures():
    result = bench.bench_train_step("resnet18", 32, 2, steps=1, warmup=1, peak_matmul_size=256)
    assert result["img_per_s"] > 0
    assert result["compile_s"] > 0
    assert math.isfinite(result["flops_per_step"]) and result["flops_per_step"] > 0
    assert result["matmul_peak_flops_per_s"] > 0
    assert result["peak_rss_gib"] > 0
