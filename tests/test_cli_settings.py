"""`invoke train --set key=value` through the real CLI: values reach the run; mistakes are one
line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jaxfundus import commands
from jaxfundus.config import ConfigError, parse_settings, settable_fields
from jaxfundus.runs import saved_config

REPO = Path(__file__).resolve().parent.parent


def _invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_set_values_reach_the_trained_run(tiny_data, tmp_path):
    result = _invoke("train", "--task=binary", "--model=simple-cnn", "--preset=smoke",
                     f"--data-dir={tiny_data.data_dir}", f"--workdir={tmp_path}",
                     "--set", "epochs=1", "--set", "augment=no", "--set", "seed=3",
                     "--set", "learning-rate=0.002")
    assert result.returncode == 0, result.stderr[-3000:]
    config = saved_config(tmp_path, "binary", "simple-cnn")
    assert (config.epochs, config.augment, config.seed, config.learning_rate) == (
        1, False, 3, 0.002)
    assert config.image_size == 32  # the smoke preset's, as nothing set it


@pytest.mark.slow
def test_unknown_or_badly_typed_settings_are_one_line_errors(tmp_path):
    unknown = _invoke("train", "--task=binary", "--set", "epoch=1", f"--workdir={tmp_path}")
    assert unknown.returncode == 1
    [line] = unknown.stderr.strip().splitlines()
    assert line == "error: unknown option 'epoch'; valid keys: " + ", ".join(settable_fields())
    typed = _invoke("train", "--task=binary", "--set", "augment=maybe", f"--workdir={tmp_path}")
    assert typed.returncode == 1
    assert typed.stderr.strip() == "error: augment = 'maybe': expected true or false"
    assert not any(tmp_path.iterdir())  # nothing was trained


def test_eval_changes_only_how_runs_are_scored(tmp_path):
    with pytest.raises(ConfigError, match="^eval cannot change epochs; it can change: threshold, "):
        commands.evaluate(task="binary", workdir=str(tmp_path), epochs=3)
    with pytest.raises(ConfigError, match="^unknown option 'epochs'; valid keys: threshold, "):
        commands.evaluate(task="binary", workdir=str(tmp_path),
                          **parse_settings(["epochs=3"], commands.EVALUATION_SETTINGS))
