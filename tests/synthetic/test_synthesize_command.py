"""`invoke synthesize`: the generator from the command line, for replicate datasets that `invoke
data` prepares and the held-out-lesion evaluation recognises as the generator's."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

from jaxfundus import commands, synthetic
from jaxfundus.data.datasets import open_dataset
from jaxfundus.methods.kinds import generated_data

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--scale=0.01", "--min-images-per-class=3", "--width=128", "--height=96"]


def _invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "synthesize", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_a_replicate_seed_is_written_prepared_and_recognised_as_generated(tmp_path):
    out = tmp_path / "seed3"
    result = _invoke(f"--out={out}", "--seed=3", *SMALL)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / synthetic.SUMMARY_FILE).read_text())
    assert summary["seed"] == 3 and summary["params"]["masks"]
    assert f"(seed 3) into {out}" in result.stdout
    # The command is the generator at those settings: the same rows as a direct call.
    direct = tmp_path / "direct"
    synthetic.generate(direct, seed=3, masks=True, workers=1, scale=0.01,
                       min_images_per_class=3, width=128, height=96)
    assert (out / "data.csv").read_text() == (direct / "data.csv").read_text()
    assert sorted(p.name for p in (out / "masks").iterdir())
    commands.prepare_data(source=str(out), data_dir=str(tmp_path / "tfds"), image_size=32,
                          log=lambda _: None)
    dataset = open_dataset(tmp_path / "tfds", 32, log=lambda _: None)
    assert not dataset.synthetic and generated_data(dataset)
    assert len(dataset.index) == summary["n_images"]


def test_bad_settings_and_real_data_folders_are_one_line_errors(tmp_path):
    result = _invoke(f"--out={tmp_path / 'bad'}", "--seed=-1", *SMALL)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: synthesize: seed must be a non-negative integer, got -1"
    real = tmp_path / "top"
    real.mkdir()
    (real / "data.csv").write_text("filename,ID\n")
    result = _invoke(f"--out={real}", *SMALL)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"out_dir {real} is not empty" in result.stderr
    assert (real / "data.csv").read_text() == "filename,ID\n"


def test_the_command_line_defaults_are_the_generators():
    """tasks.py spells the defaults out (invoke shows and types flags by them); they must stay
    the generator's, or a plain `invoke synthesize --seed=0` would not be the default data."""
    spec = importlib.util.spec_from_file_location("tasks", REPO / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    flags = inspect.signature(tasks.synthesize.body).parameters
    generator = inspect.signature(synthetic.generate).parameters
    shared = set(flags) & set(generator)
    assert shared == {"seed", "scale", "style", "width", "height", "severity",
                      "min_images_per_class"}
    assert {n: flags[n].default for n in shared} == {n: generator[n].default for n in shared}
