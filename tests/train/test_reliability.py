"""Damaged files and double starts, as a user meets them: through `invoke train`, with real
Orbax checkpoints and real prepared data on the tiny synthetic set."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxfundus import runs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _train_command(data_dir, workdir, *settings: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "train", "--task=binary", "--model=simple-cnn",
            "--preset=smoke", f"--data-dir={data_dir}", f"--workdir={workdir}",
            *(f"--set={s}" for s in settings)]


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          **kwargs)


def _fold(workdir: Path) -> Path:
    return runs.fold_directory(workdir, "binary", "simple-cnn", 0)


def _steps(fold: Path) -> list[int]:
    directory = fold / runs.CHECKPOINTS
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
        if directory.is_dir() else []


def _damage(step_dir: Path) -> None:
    """Truncate every data file of a checkpoint's train state to half its size."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size]
    assert files
    for path in files:
        os.truncate(path, path.stat().st_size // 2)


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


@pytest.fixture(scope="module")
def interrupted(tiny_data, tmp_path_factory) -> Path:
    """A run killed in its second epoch: the first epoch's (best) checkpoint and a newer
    mid-epoch one on disk, no metrics.json. Tests copy it before changing anything."""
    workdir = tmp_path_factory.mktemp("interrupted")
    process = subprocess.Popen(
        _train_command(tiny_data.data_dir, workdir, *INTERRUPTED_SETTINGS),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fold, deadline = _fold(workdir), time.monotonic() + 300
    try:
        # Kill once the first epoch's checkpoint and the first mid-epoch one after it are
        # saved; the save that would replace the latter is 4 steps away.
        while not _epoch_and_mid_epoch_saved(fold):
            assert process.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (fold / runs.METRICS).exists()
    return workdir


INTERRUPTED_SETTINGS = ("epochs=2", "checkpoint_every_steps=4")


def _epoch_and_mid_epoch_saved(fold: Path) -> bool:
    split = runs.Fold(0, fold, None, None).split() if (fold / runs.SPLIT).exists() else None
    if split is None:
        return False
    epoch_end = int((split["split"] == "train").sum()) // 16  # the smoke preset's batch
    steps = _steps(fold)
    return epoch_end in steps and any(step > epoch_end for step in steps)


def _copy(workdir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(workdir, copy)
    return copy


def test_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes(tiny_data, interrupted,
                                                                    tmp_path):
    workdir = _copy(interrupted, tmp_path)
    fold = _fold(workdir)
    older, newest = _steps(fold)[-2:]
    _damage(fold / runs.CHECKPOINTS / str(newest))
    result = _run(_train_command(tiny_data.data_dir, workdir, *INTERRUPTED_SETTINGS))
    assert result.returncode == 0, result.stderr
    assert f"the checkpoint at step {newest} in" in result.stdout and "unreadable" in result.stdout
    assert f"resuming from checkpoint at step {older}" in result.stdout
    aside = fold / "checkpoints-damaged" / f"step-{newest}"
    assert f"moved it to {aside}" in result.stdout
    assert (aside / "state").is_dir()  # kept, not deleted
    assert (fold / runs.METRICS).is_file()


def test_no_readable_checkpoint_is_a_one_line_error(tiny_data, interrupted, tmp_path):
    workdir = _copy(interrupted, tmp_path)
    fold = _fold(workdir)
    for step in _steps(fold):
        _damage(fold / runs.CHECKPOINTS / str(step))
    result = _run(_train_command(tiny_data.data_dir, workdir, *INTERRUPTED_SETTINGS))
    line = _one_line_error(result)
    assert line.startswith(f"error: no checkpoint in {fold / runs.CHECKPOINTS} restores")
    assert "--retrain" in line


def test_best_checkpoint_unreadable_in_eval_names_run_and_step(interrupted, tmp_path):
    # The interrupted run's best checkpoint (the first epoch's) is not its newest: eval reads
    # the newest one's record of the best step, then fails on the best one, and names it.
    workdir = _copy(interrupted, tmp_path)
    fold = _fold(workdir)
    best, _ = _steps(fold)[-2:]
    _damage(fold / runs.CHECKPOINTS / str(best))
    result = _run([sys.executable, "-m", "invoke", "eval", "--task=binary",
                   "--model=simple-cnn", f"--workdir={workdir}"])
    line = _one_line_error(result)
    assert f"the checkpoint at step {best} in {fold / runs.CHECKPOINTS} is unreadable" in line


def test_a_second_train_on_a_running_run_stops_and_a_killed_holder_is_taken_over(tiny_data,
                                                                                 tmp_path):
    workdir = tmp_path / "runs"
    first = subprocess.Popen(
        _train_command(tiny_data.data_dir, workdir, "epochs=500", "checkpoint_every_steps=2"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = runs.run_directory(workdir, "binary", "simple-cnn") / ".lock"
    deadline = time.monotonic() + 300
    try:
        while not (_steps(_fold(workdir)) and lock.exists() and lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = _run(_train_command(tiny_data.data_dir, workdir, "epochs=1"))
        line = _one_line_error(second)
        assert f"is in use by process {first.pid} on" in line
        assert first.poll() is None  # the first run was left alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = _run(_train_command(tiny_data.data_dir, workdir, "epochs=1"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over the lock of {lock.parent} from process {first.pid}" in resumed.stdout
    assert "resuming from checkpoint at step" in resumed.stdout
    assert lock.read_text() == ""  # released when the run ended


def test_two_different_runs_in_one_workdir_train_side_by_side(tiny_data, tmp_path):
    workdir = tmp_path / "runs"
    other = [sys.executable, "-m", "invoke", "train", "--task=three-class",
             "--model=simple-cnn", "--preset=smoke", f"--data-dir={tiny_data.data_dir}",
             f"--workdir={workdir}", "--set=epochs=1"]
    processes = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
                 for c in (_train_command(tiny_data.data_dir, workdir, "epochs=1"), other)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_damaged_prepared_data_stops_before_training(tiny_data, tmp_path, damage):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data.data_dir, data_dir)
    [shard] = sorted(data_dir.rglob("*.array_record-*"))
    if damage == "truncated":
        os.truncate(shard, shard.stat().st_size - 100)
    else:
        with shard.open("r+b") as f:  # same size, different bytes
            f.seek(shard.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    result = _run(_train_command(data_dir, tmp_path / "runs", "epochs=1"))
    line = _one_line_error(result)
    assert f"{shard.parent} is damaged: shard {shard.name}" in line
    assert f"invoke data --source {tiny_data.source_dir} --data-dir {data_dir}" in line
    assert not (tmp_path / "runs" / "binary").exists()  # nothing trained


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True)
    return shutil.which("unshare") is not None and probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(),
                    reason="needs `unshare -rm` to mount a small tmpfs (a real full disk)")
def test_full_disk_while_saving_stops_cleanly_and_earlier_checkpoints_resume(tiny_data,
                                                                            interrupted,
                                                                            tmp_path):
    # How much one checkpoint takes, measured on a normal disk: the interrupted run's first
    # epoch's, the same model and optimizer state as the first checkpoint below.
    step, _ = _steps(_fold(interrupted))[-2:]
    checkpoint = sum(p.stat().st_size
                     for p in (_fold(interrupted) / runs.CHECKPOINTS / str(step)).rglob("*")
                     if p.is_file())
    # A disk with room for the first epoch's checkpoint but not for a second one beside it.
    kib = (checkpoint * 8 // 5 + 512 * 1024) // 1024
    workdir, saved = tmp_path / "full", tmp_path / "saved"
    workdir.mkdir()
    train = " ".join(_train_command(tiny_data.data_dir, workdir, "epochs=3", "patience=0"))
    script = (f"mount -t tmpfs -o size={kib}k none {workdir} && {train}; status=$?; "
              f"cp -a {workdir} {saved}; exit $status")
    result = _run(["unshare", "-rm", "sh", "-c", script])
    line = _one_line_error(result)
    assert "could not save the checkpoint at step" in line
    assert "not enough space on its disk" in line or "No space left on device" in line
    assert "the checkpoints saved before are intact" in line
    assert _steps(_fold(saved)) == [step]
    resumed = _run(_train_command(tiny_data.data_dir, saved, "epochs=3", "patience=0"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from checkpoint at step {step}" in resumed.stdout
