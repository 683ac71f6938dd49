"""A DRAEM run killed mid-training resumes to the same predictions: its synthetic anomalies are
seeded by (seed, epoch, position), so the resumed run paints exactly what the first one would
have. Fresh processes, real checkpoints, the tiny synthetic data."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TRAIN_CODE = textwrap.dedent("""
    import sys
    from jaxfundus import commands
    commands.train(task="draem", preset="smoke", epochs=3, data_dir=sys.argv[1],
                   workdir=sys.argv[2], checkpoint_every_steps=2,
                   log=lambda line: print(line, flush=True))
""")


def _command(data_dir, workdir) -> list[str]:
    return [sys.executable, "-c", TRAIN_CODE, str(data_dir), str(workdir)]


def _fold(workdir: Path) -> Path:
    return workdir / "draem" / "draem" / "fold-0"


def _saved_steps(checkpoints: Path) -> list[int]:
    if not checkpoints.is_dir():
        return [0]
    return [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] or [0]


def test_killed_draem_run_resumes_to_identical_predictions(tiny_data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(tiny_data.data_dir, reference), check=True, capture_output=True,
                   timeout=900)
    resumed_dir = tmp_path / "resumed"
    checkpoints = _fold(resumed_dir) / "checkpoints"
    process = subprocess.Popen(_command(tiny_data.data_dir, resumed_dir),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while max(_saved_steps(checkpoints)) < 4:
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (_fold(resumed_dir) / "metrics.json").exists()
    resumed = subprocess.run(_command(tiny_data.data_dir, resumed_dir), check=True,
                             capture_output=True, text=True, timeout=900)
    assert "resuming from checkpoint at step" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_csv(_fold(resumed_dir) / "predictions.csv"),
                                  pd.read_csv(_fold(reference) / "predictions.csv"))
