"""A DRAEM run killed mid-training resumes to the same predictions as the uninterrupted run
(conftest's draem_run, same settings): its synthetic anomalies are seeded by (seed, epoch,
position), so the resumed run paints exactly what the first one would have. Fresh processes,
real checkpoints, the tiny synthetic data."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import kill_after_checkpoint

from jaxfundus import runs

pytestmark = pytest.mark.slow

KILLED_AT_STEP = 4  # mid-epoch 2 of 3
# The settings of conftest's draem_run, plus a checkpoint every 2 steps; the killed child
# SIGKILLs itself once its step-4 checkpoint is on disk, so every run resumes from that state.
TRAIN_CODE = textwrap.dedent("""
    import sys
    from jaxfundus import commands
    {before}
    commands.train(task="draem", preset="smoke", epochs=3, data_dir=sys.argv[1],
                   workdir=sys.argv[2], checkpoint_every_steps=2,
                   log=lambda line: print(line, flush=True))
""")


def _train(data_dir, workdir, before: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", TRAIN_CODE.format(before=before), str(data_dir),
               str(workdir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_killed_draem_run_resumes_to_identical_predictions(draem_run, tiny_data, tmp_path):
    fold = runs.fold_directory(tmp_path, "draem", "draem", 0)
    killed = _train(tiny_data.data_dir, tmp_path, kill_after_checkpoint(KILLED_AT_STEP))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = sorted(int(p.name) for p in (fold / runs.CHECKPOINTS).iterdir() if p.name.isdigit())
    assert saved[-1] == KILLED_AT_STEP and not (fold / runs.METRICS).exists()
    resumed = _train(tiny_data.data_dir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from checkpoint at step {KILLED_AT_STEP}" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_csv(fold / runs.PREDICTIONS),
                                  pd.read_csv(draem_run.fold / runs.PREDICTIONS))
