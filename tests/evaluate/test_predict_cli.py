"""`invoke predict` and `invoke eval` on a smoke-trained run, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxfundus import commands

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    commands.train(task="three-class", model="simple-cnn", preset="smoke", epochs=1,
                   data_dir=str(tiny_data.data_dir), workdir=str(workdir), log=lambda _: None)
    return workdir


def _invoke(*args, workdir):
    return subprocess.run([sys.executable, "-m", "invoke", *args, f"--workdir={workdir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _square_photo(path: Path) -> Path:
    """A real-format photograph: square 1411x1411 JPEG, fundus disc on a black border."""
    yy, xx = np.mgrid[:1411, :1411]
    disc = (yy - 705) ** 2 + (xx - 705) ** 2 < 600**2
    image = np.zeros((1411, 1411, 3), np.uint8)
    image[disc] = (200, 90, 40)
    Image.fromarray(image).save(path, quality=90)
    return path


def test_predict_json_on_a_real_format_jpeg(trained, tmp_path):
    photo = _square_photo(tmp_path / "square.jpg")
    result = _invoke("predict", "--task=three-class", "--model=simple-cnn", f"--image={photo}",
                     "--json", workdir=trained)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    record = json.loads(line)
    assert set(record["probabilities"]) == {"normal", "Gla", "DR"}
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["prediction"] in record["probabilities"]


def test_predict_bad_inputs_get_one_line_errors(trained, tmp_path):
    missing = _invoke("predict", "--task=three-class", "--model=simple-cnn",
                      f"--image={tmp_path / 'nope.jpg'}", workdir=trained)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "nope.jpg: file is missing" in missing.stderr
    folder = tmp_path / "mixed"
    folder.mkdir()
    _square_photo(folder / "good.jpg")
    (folder / "notes.jpg").write_text("not a photograph")
    mixed = _invoke("predict", "--task=three-class", "--model=simple-cnn", f"--folder={folder}",
                    "--json", workdir=trained)
    assert mixed.returncode != 0 and "Traceback" not in mixed.stderr
    assert "notes.jpg" in mixed.stderr
    assert [json.loads(line)["file"] for line in mixed.stdout.splitlines()] == [
        str(folder / "good.jpg")]


def test_eval_rewrites_metrics_from_the_best_checkpoint(trained):
    metrics_path = trained / "three-class" / "simple-cnn" / "fold-0" / "metrics.json"
    before = json.loads(metrics_path.read_text())
    metrics_path.unlink()
    result = _invoke("eval", "--task=three-class", "--model=simple-cnn", workdir=trained)
    assert result.returncode == 0, result.stderr
    after = json.loads(metrics_path.read_text())
    assert after["accuracy"] == pytest.approx(before["accuracy"])
    assert after["macro_auroc"] == pytest.approx(before["macro_auroc"])


def test_unknown_task_is_one_line(tmp_path):
    result = _invoke("train", "--task=nine-class", workdir=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: unknown task 'nine-class'")
    assert len(result.stderr.strip().splitlines()) == 1
