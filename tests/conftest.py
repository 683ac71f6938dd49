"""Shared fixtures: one tiny synthetic TOP dataset, generated and built by the real code.

The suite runs on the CPU backend whatever is installed: expected device strings and bit-exact
resumes are CPU facts, and subprocesses inherit the same environment.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from jaxfundus.host_memory import retain_freed_memory

# Before anything imports jax (jax reads these once, at import): the CPU backend, one host
# device unless a test asks for more, and no compilation cache chosen by the user's environment
# (tests get a private one under their own XDG_CACHE_HOME, see _private_cache).
os.environ["JAX_PLATFORMS"] = "cpu"
for _name in ("JAX_COMPILATION_CACHE_DIR", "JAXFUNDUS_COMPILATION_CACHE"):
    os.environ.pop(_name, None)
if "XLA_FLAGS" in os.environ:
    os.environ["XLA_FLAGS"] = " ".join(
        flag for flag in os.environ["XLA_FLAGS"].split()
        if not flag.startswith("--xla_force_host_platform_device_count"))

# pytest is an entry point too: tune the allocator as tasks.py does, before any test imports jax.
retain_freed_memory()

TINY_IMAGE_SIZE = 32


def kill_after_checkpoint(step: int) -> str:
    """Python lines for a training child process: SIGKILL itself once its checkpoint at `step`
    is on disk (saves run in the background, so it waits for that one), so every run of a
    kill -9 test resumes from the same state."""
    return textwrap.dedent(f"""
        import os, signal
        from jaxfundus.train import checkpoint
        _save = checkpoint.RunCheckpoints.save
        def _save_then_die(self, step, *args, **kwargs):
            _save(self, step, *args, **kwargs)
            if step == {step}:
                self.wait()
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.RunCheckpoints.save = _save_then_die
    """)


class TinyData:
    """The tiny synthetic TOP dataset: generated at once, prepared (TFDS) on first use."""

    def __init__(self, source_dir: Path, prepared_dir: Path) -> None:
        self.source_dir = source_dir  # TOP layout: data.csv + img/ (+ masks/)
        self._prepared_dir = prepared_dir

    @functools.cached_property
    def data_dir(self) -> Path:
        """The prepared TFDS dataset at TINY_IMAGE_SIZE (built here, once per session)."""
        from jaxfundus.data.tfds_dataset import build_dataset

        build_dataset(self.source_dir, self._prepared_dir, image_size=TINY_IMAGE_SIZE)
        return self._prepared_dir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    from jaxfundus.synthetic import generate

    source = tmp_path_factory.mktemp("tiny-top") / "source"
    generate(source, scale=0.02, seed=0, width=128, height=96, min_images_per_class=16,
             masks=True, workers=1)
    return TinyData(source, tmp_path_factory.mktemp("tiny-tfds"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or write the user's cache. The compilation cache is on from the start,
    as the commands switch it on, so a test that compiles a program an earlier test compiled
    (the same model, shapes and schedule) loads it whatever the order."""
    from jaxfundus.compile_cache import enable_compilation_cache

    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    enable_compilation_cache()
    yield
    mp.undo()


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished run in `workdir`: one task x model (holdout: fold 0), trained by
    `commands.train` with `settings` on `data_dir`."""

    workdir: Path
    data_dir: Path
    task: str
    model: str
    settings: dict

    @property
    def fold(self) -> Path:
        from jaxfundus import runs

        return runs.fold_directory(self.workdir, self.task, self.model, 0)

    @property
    def epochs(self) -> int:
        return self.settings["epochs"]

    @property
    def patience(self) -> int:
        return self.settings["patience"]

    def train(self, log=lambda _: None, **extra) -> list[dict]:
        """`commands.train` of this run with its settings (and `extra`, e.g. retrain=True)."""
        from jaxfundus import commands

        return commands.train(task=self.task, model=self.model, data_dir=str(self.data_dir),
                              workdir=str(self.workdir), log=log, **self.settings, **extra)

    def copy_to(self, directory: Path) -> TrainedRun:
        """The same run in a copy of its workdir under `directory`, for a test to change."""
        shutil.copytree(self.workdir, directory / "runs")
        return dataclasses.replace(self, workdir=directory / "runs")


@pytest.fixture(scope="session")
def early_stopped_run(tiny_data, tmp_path_factory) -> TrainedRun:
    """binary / simple-cnn for up to 8 epochs with patience 2, at a learning rate at which the
    validation score peaks early: training stops before epoch 8 and the best checkpoint is not
    the latest. Read-only: tests change a `copy_to` copy."""
    run = TrainedRun(tmp_path_factory.mktemp("early-stopped"), tiny_data.data_dir, "binary",
                     "simple-cnn", {"preset": "smoke", "epochs": 8, "patience": 2,
                                    "learning_rate": 3e-3})
    run.train()
    return run


@pytest.fixture(scope="session")
def vae_run(tiny_data, tmp_path_factory) -> TrainedRun:
    """vae / vae, 30 smoke epochs: a detector that ranks the tiny data's lesions above normals,
    its threshold by Youden's J on validation (F1 flags nearly every image on this
    anomaly-heavy validation split; the prediction tests need both decisions). Read-only:
    tests change a `copy_to` copy."""
    run = TrainedRun(tmp_path_factory.mktemp("vae"), tiny_data.data_dir, "vae", "vae",
                     {"preset": "smoke", "epochs": 30, "learning_rate": 2e-3,
                      "threshold_criterion": "youden"})
    run.train()
    return run


@pytest.fixture(scope="session")
def draem_run(tiny_data, tmp_path_factory) -> TrainedRun:
    """draem / draem, smoke preset for 3 epochs (its held-out-lesion evaluation on), trained in
    this process; the resume test's uninterrupted reference. Read-only: tests change a
    `copy_to` copy."""
    run = TrainedRun(tmp_path_factory.mktemp("draem"), tiny_data.data_dir, "draem", "draem",
                     {"preset": "smoke", "epochs": 3})
    run.train()
    return run
