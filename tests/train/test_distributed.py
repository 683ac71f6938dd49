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
from conftest import kill_after_checkpoint

from jaxfundus import runs

pytestmark = pytest.mark.slow

TRAIN_CODE = textwrap.dedent("""
    import sys
    from jaxfundus import commands
    {before}
    commands.train(task="binary", model="simple-cnn", preset="smoke", epochs={epochs},
                   data_dir=sys.argv[1], workdir=sys.argv[2], checkpoint_every_steps=2,
                   log=lambda line: print(line, flush=True))
""")
KILLED_AT_STEP = 4  # mid-epoch 1: the resume restores the iterator's position and the sums
# The child kills itself once its step-4 checkpoint is on disk: checkpoint 4, nothing later.
KILL_AFTER_CHECKPOINT = kill_after_checkpoint(KILLED_AT_STEP)
PORT_TAKEN = "Failed to start RPC server"  # the coordinator's port was taken meanwhile


def _command(data_dir, workdir, epochs=2, before=""):
    code = TRAIN_CODE.format(epochs=epochs, before=before)
    return [sys.executable, "-c", code, str(data_dir), str(workdir)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(extra)
    return env


def _fold(workdir: Path) -> Path:
    return runs.fold_directory(workdir, "binary", "simple-cnn", 0)


def _predictions(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(_fold(workdir) / runs.PREDICTIONS)


def _probs(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted run on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    subprocess.run(_command(tiny_data.data_dir, workdir), env=_env(), check=True,
                   capture_output=True, timeout=600)
    return _predictions(workdir)


def test_killed_run_resumes_to_identical_predictions(tiny_data, tmp_path, reference):
    killed = subprocess.run(_command(tiny_data.data_dir, tmp_path, before=KILL_AFTER_CHECKPOINT),
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = _fold(tmp_path) / runs.CHECKPOINTS
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [
        KILLED_AT_STEP]
    assert not (_fold(tmp_path) / runs.METRICS).exists()
    resumed = subprocess.run(_command(tiny_data.data_dir, tmp_path), env=_env(), check=True,
                             capture_output=True, text=True, timeout=600)
    assert f"resuming from checkpoint at step {KILLED_AT_STEP} (epoch 1 of 2)" in resumed.stdout
    pd.testing.assert_frame_equal(_predictions(tmp_path), reference)


def test_four_simulated_devices_match_one_device(tiny_data, tmp_path, reference):
    result = subprocess.run(
        _command(tiny_data.data_dir, tmp_path),
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"), check=True,
        capture_output=True, text=True, timeout=600)
    assert "data-parallel over 4 CPU device(s)" in result.stdout
    assert np.abs(_probs(_predictions(tmp_path)) - _probs(reference)).max() < 1e-3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_together(commands: list[list[str]], logs: Path, timeout: float) -> list[tuple]:
    """(returncode, output) of each command, all started at once. When one fails, or at the
    timeout, the others are killed (a process waiting for a coordinator would wait long)."""
    logs.mkdir(parents=True)
    files = [logs / f"process-{i}.log" for i in range(len(commands))]
    processes = []
    try:
        for command, file in zip(commands, files, strict=True):
            with file.open("w") as out:
                processes.append(subprocess.Popen(command, env=_env(), stdout=out,
                                                  stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    return [(p.returncode, file.read_text()) for p, file in zip(processes, files, strict=True)]


def test_two_processes_train_together(tiny_data, tmp_path, reference):
    # The port is free when chosen but may be taken before the coordinator binds it: then
    # the coordinator says so at once, and the pair starts again on another port.
    for attempt in range(3):
        workdir, port = tmp_path / f"attempt-{attempt}", _free_port()
        commands = [_command(tiny_data.data_dir, workdir, before=(
            f"from jaxfundus.train.mesh import initialize_distributed; "
            f"initialize_distributed('127.0.0.1:{port}', 2, {process_id})"))
            for process_id in range(2)]
        results = _run_together(commands, workdir / "logs", timeout=600)
        if not any(PORT_TAKEN in output for _, output in results):
            break
    assert [code for code, _ in results] == [0, 0], results
    assert "data-parallel over 2 CPU device(s) in 2 processes" in results[0][1]
    assert np.abs(_probs(_predictions(workdir)) - _probs(reference)).max() < 1e-3
