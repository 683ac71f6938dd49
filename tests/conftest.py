"""Shared fixtures: one tiny synthetic TOP dataset, generated and built by the real code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jaxfundus.host_memory import retain_freed_memory

# pytest is an entry point too: tune the allocator as tasks.py does, before any test imports jax.
retain_freed_memory()

TINY_IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class TinyData:
    source_dir: Path  # TOP layout: data.csv + img/ (+ masks/)
    data_dir: Path  # prepared TFDS dataset at TINY_IMAGE_SIZE


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    from jaxfundus.data.tfds_dataset import build_dataset
    from jaxfundus.synthetic import generate

    source = tmp_path_factory.mktemp("tiny-top") / "source"
    generate(source, scale=0.02, seed=0, width=128, height=96, min_images_per_class=16,
             masks=True, workers=1)
    data_dir = tmp_path_factory.mktemp("tiny-tfds")
    build_dataset(source, data_dir, image_size=TINY_IMAGE_SIZE)
    return TinyData(source, data_dir)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or write the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    mp.undo()
