"""Resume after kill -9, data parallelism over simulated devices, and two JAX processes.

Each scenario runs training in fresh Python processes (device count and jax.distributed must be
set before JAX starts), on the tiny synthetic dataset, with the real loop and checkpoints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TRAIN_CODE = textwrap.dedent("""
    import sys
    from jaxfundus import commands
    {distributed}
    commands.train(task="binary", model="simple-cnn", preset="smoke", epochs={epochs},
                   data_dir=sys.argv[1], workdir=sys.argv[2], checkpoint_every_steps=2,
                   log=lambda line: print(line, flush=True))
""")


def _command(data_dir, workdir, epochs=2, distributed=""):
    code = TRAIN_CODE.format(epochs=epochs, distributed=distributed)
    return [sys.executable, "-c", code, str(data_dir), str(workdir)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(extra)
    return env


def _predictions(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "binary" / "simple-cnn" / "fold-0" / "predictions.csv")


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted run on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    subprocess.run(_command(tiny_data.data_dir, workdir), env=_env(), check=True,
                   capture_output=True, timeout=600)
    return _predictions(workdir)


def test_killed_run_resumes_to_identical_predictions(tiny_data, tmp_path, reference):
    checkpoints = tmp_path / "binary" / "simple-cnn" / "fold-0" / "checkpoints"
    process = subprocess.Popen(_command(tiny_data.data_dir, tmp_path), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not _saved_steps(checkpoints) or max(_saved_steps(checkpoints)) < 4:
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (checkpoints.parent / "metrics.json").exists()
    resumed = subprocess.run(_command(tiny_data.data_dir, tmp_path), env=_env(), check=True,
                             capture_output=True, text=True, timeout=600)
    assert "resuming from checkpoint at step" in resumed.stdout
    pd.testing.assert_frame_equal(_predictions(tmp_path), reference)


def _saved_steps(checkpoints: Path) -> list[int]:
    if not checkpoints.is_dir():
        return [0]
    return [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] or [0]


def test_four_simulated_devices_match_one_device(tiny_data, tmp_path, reference):
    result = subprocess.run(
        _command(tiny_data.data_dir, tmp_path),
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"), check=True,
        capture_output=True, text=True, timeout=600)
    assert "data-parallel over 4 CPU device(s)" in result.stdout
    parallel = _predictions(tmp_path)
    probs = [c for c in reference.columns if c.startswith("prob_")]
    assert np.abs(parallel[probs].to_numpy() - reference[probs].to_numpy()).max() < 1e-3


def test_two_processes_train_together(tiny_data, tmp_path, reference):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = []
    for process_id in range(2):
        distributed = (f"from jaxfundus.train.mesh import initialize_distributed; "
                       f"initialize_distributed('127.0.0.1:{port}', 2, {process_id})")
        processes.append(subprocess.Popen(
            _command(tiny_data.data_dir, tmp_path, distributed=distributed), env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "data-parallel over 2 CPU device(s) in 2 processes" in outputs[0]
    probs = [c for c in reference.columns if c.startswith("prob_")]
    difference = _predictions(tmp_path)[probs].to_numpy() - reference[probs].to_numpy()
    assert np.abs(difference).max() < 1e-3
