"""`invoke bench`: the figures it reports are the ones of the real step and pipeline.

Speed itself is not asserted (shared CI machines are too noisy); docs/performance.md has the
measured table. What is asserted: the FLOP count is the model's (checked against the
convolutions' multiply-adds counted by hand), the derived rates follow from the timings, and
the pipeline times the uint8 batches the training step receives.
"""

import importlib.util
import resource
import time

import numpy as np
import pytest

from jaxfundus import bench
from jaxfundus.train.mesh import DataParallel

BATCH = 2


def resnet18_forward_macs(image_size: int, num_outputs: int) -> tuple[int, int]:
    """(multiply-adds of one image's forward pass, those of the stem) for ResNet-18, counted
    from its layers: 7x7/2 stem, 3x3/2 max pool, 2 basic blocks per stage, dense head."""
    side = image_size // 2
    stem = side * side * 7 * 7 * 3 * 64
    side //= 2  # max pool
    macs, channels = stem, 64
    for stage, width in enumerate((64, 128, 256, 512)):
        if stage:
            side //= 2
            macs += side * side * (9 * channels * width + channels * width)  # 3x3/2 + projection
        else:
            macs += side * side * 9 * channels * width
        macs += side * side * 9 * width * width * 3  # the other three 3x3 convolutions
        channels = width
    return macs + channels * num_outputs, stem


@pytest.mark.slow
def test_train_step_flops_are_the_models_and_rates_follow_from_the_timing():
    start = time.perf_counter()
    result = bench.bench_train_step("resnet18", 32, BATCH, steps=2, warmup=1,
                                    peak_matmul_size=256)
    elapsed = time.perf_counter() - start
    assert result["devices"] == DataParallel().describe()
    macs, stem = resnet18_forward_macs(32, num_outputs=5)
    # Forward, input gradient (none for the stem: the image takes no gradient) and weight
    # gradient each cost the forward's multiply-adds; 2 FLOPs per multiply-add.
    convolutions = 2 * BATCH * (3 * macs - stem)
    # BatchNorm, ReLU, augmentation and the AdamW update (11M parameters) add elementwise FLOPs,
    # which at 32 px and batch 2 are of the order of the convolutions' own.
    assert convolutions <= result["flops_per_step"] <= 2.5 * convolutions
    assert result["img_per_s"] == pytest.approx(BATCH / result["step_s"])
    assert result["achieved_flops_per_s"] == pytest.approx(
        result["flops_per_step"] / result["step_s"])
    assert result["mfu"] == pytest.approx(
        result["achieved_flops_per_s"] / result["matmul_peak_flops_per_s"])
    assert 0 < result["step_s"] < result["compile_s"]  # a compile costs more than one step
    # Compilation and the three steps ran inside the call, each step waited for: a step timed
    # without waiting would look faster than the measured matmul peak allows.
    assert result["compile_s"] + 3 * result["step_s"] < elapsed
    assert result["mfu"] < 1.5
    state_gib = 3 * 11.2e6 * 4 / 2**30  # parameters and two AdamW moments, float32
    peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert state_gib < result["peak_rss_gib"] <= peak_now


def test_pipeline_times_the_uint8_batches_the_step_receives(tiny_data):
    result = bench.bench_pipeline(32, 4, steps=3, data_dir=str(tiny_data.data_dir),
                                  log=lambda _: None)
    assert result["batch_shape"] == [4, 32, 32, 3]
    assert result["batch_dtype"] == "uint8"  # augmentation and normalisation are on the device
    assert result["images"] == 3 * 4
    assert result["img_per_s"] == pytest.approx(result["images"] / result["seconds"])
    assert result["img_per_s_per_worker"] == result["img_per_s"]  # workers=0: one, this process


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch reference not installed (pip install torch==2.13.0)")
def test_torch_reference_times_the_same_step_shape():
    result = bench.bench_torch_reference("ganomaly", 32, BATCH, steps=1)
    assert result is not None
    assert (result["framework"], result["model"]) == ("torch", "ganomaly")
    assert (result["image_size"], result["batch_size"]) == (32, BATCH)
    assert result["img_per_s"] == pytest.approx(BATCH / result["step_s"])
    assert np.isfinite(result["step_s"]) and result["step_s"] > 0
