"""A non-editable install works: the wheel holds every module and the task matrix (experiments/),
and an installed copy resolves a task's configuration from outside the repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "jaxfundus", "experiments", "tfds_builder")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds (offline: no build isolation), from a copy of the sources
    so that the build leaves nothing in the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    project = root / "project"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, project / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            project.mkdir(exist_ok=True)
            shutil.copy2(source, project / name)
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
               "--no-cache-dir", "-q", "-w", str(root / "dist")]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [built] = (root / "dist").glob("jaxfundus-*.whl")
    return built


def test_the_wheel_holds_every_module_and_task_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"jaxfundus/experiments/{p.name}" for p in (REPO / "experiments").glob("*.toml")}
    assert {f"jaxfundus/experiments/{name}.toml" for name in ("five-rare", "presets")} <= expected
    for package in ("jaxfundus", "tfds_builder"):
        expected |= {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")}
    expected |= {p.relative_to(REPO).as_posix()
                 for p in (REPO / "tfds_builder").rglob("*") if p.is_file()
                 and p.suffix in (".md", ".bib", ".tsv", ".csv", ".jpg")}
    assert expected - names == set()


def test_an_installed_copy_resolves_a_task_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -I -S: no PYTHONPATH, no site-packages (so no editable install), no working directory on
    # the path; the unpacked wheel is the only jaxfundus there is. Config needs only the stdlib.
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.path.insert(0, {str(site)!r})
        from jaxfundus.config import resolve_config, task_names
        config = resolve_config("five-rare", preset="cpu")
        print(json.dumps({{"module": sys.modules["jaxfundus.config"].__file__,
                          "experiments": importlib.util.find_spec("jaxfundus.experiments").origin,
                          "tasks": task_names(), "config": config.to_dict()}}))
    """)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=elsewhere,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert Path(result["module"]).is_relative_to(site)
    assert Path(result["experiments"]).is_relative_to(site)
    assert {"five-rare", "binary", "ganomaly", "vae"} <= set(result["tasks"])
    assert result["config"]["task"] == "five-rare" and result["config"]["model"] == "resnet50"
    assert result["config"]["image_size"] == 64  # the cpu preset, read from the installed TOML


def test_no_test_folder_shadows_a_shipped_package():
    """pytest puts tests/ on sys.path (its conftest); a test folder named like a shipped package
    becomes a namespace package that hides the editable install's copy when pytest runs without
    the checkout on sys.path, as CI's bare `pytest` does."""
    shipped = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert {"jaxfundus", "tfds_builder"} <= shipped
    assert {p.name for p in (REPO / "tests").iterdir() if p.is_dir()} & shipped == set()
