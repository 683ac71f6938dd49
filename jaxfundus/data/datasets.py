"""Resolve the data a command runs on: a prepared TFDS dataset, or the embedded synthetic default.

With no `--data-dir`, the procedural generator writes a TOP-layout directory once into the user
cache (respecting XDG_CACHE_HOME) and the same TFDS builder prepares it, so the synthetic default
and the real TOP data go through one code path.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from jaxfundus import synthetic
from jaxfundus.data.layout import IMAGE_SIZES, is_prepared, stored_size_for
from jaxfundus.data.tfds_dataset import DataError, build_dataset, load_dataset
from jaxfundus.paths import cache_dir

DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A random-access record source plus its index (one row per record, no image decoding)."""

    source: Any
    index: pd.DataFrame
    stored_size: int
    data_dir: Path
    synthetic: bool
    fingerprint: str
    masks_dir: Path | None = None  # per-image lesion masks (the generator writes them)
    crop: str = "none"  # "fov": photographs were cropped to their field of view

    def describe(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), "synthetic": self.synthetic,
                "stored_image_size": self.stored_size, "fingerprint": self.fingerprint,
                "crop": self.crop,
                "n_images": len(self.index), "n_patients": int(self.index["patient_id"].nunique())}

    def headline(self) -> str:
        kind = ("SYNTHETIC default data (procedural fundus generator, not real patients)"
                if self.synthetic else "prepared TOP-layout data")
        return (f"{kind}: {len(self.index)} images of {self.index['patient_id'].nunique()} "
                f"patients at {self.data_dir} [fingerprint {self.fingerprint}]")


def default_source(log: Callable[[str], None] = print) -> Path:
    """The synthetic TOP-layout directory in the cache, generated on first use."""
    target = cache_dir() / f"synthetic-v{synthetic.GENERATOR_VERSION}-seed{DEFAULT_SEED}" / "source"
    if (target / "data.csv").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating the synthetic default dataset into {target} (first run only)")
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".source-"))
    try:
        summary = synthetic.generate(staging, seed=DEFAULT_SEED, masks=True)
        os.replace(staging, target)  # atomic: a half-written directory is never used
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"generated {summary['n_images']} synthetic images of {summary['n_patients']} patients")
    return target


def open_dataset(data_dir: str | os.PathLike | None, image_size: int,
                 log: Callable[[str], None] = print) -> Dataset:
    """Prepared data at `data_dir` (the smallest stored size >= image_size), or the default."""
    size = stored_size_for(image_size)
    if data_dir is None:
        source_dir = default_source(log)
        prepared = source_dir.parent / "tfds"
        build_dataset(source_dir, prepared, image_size=size)
        loaded = load_dataset(prepared, size)
        return Dataset(loaded.source, loaded.index, size, prepared, True, loaded.fingerprint,
                       masks_dir=source_dir / "masks")
    loaded = _load_smallest(Path(data_dir), image_size)
    masks = loaded.source_dir / "masks" if loaded.source_dir else None
    return Dataset(loaded.source, loaded.index, loaded.image_size, Path(data_dir), False,
                   loaded.fingerprint, masks_dir=masks if masks and masks.is_dir() else None,
                   crop=loaded.crop)


def _load_smallest(data_dir: Path, image_size: int):
    for size in IMAGE_SIZES:
        if size >= image_size and is_prepared(data_dir, size):
            return load_dataset(data_dir, size)
    raise DataError(
        f"no prepared dataset in {data_dir} with images of at least {image_size} px; run "
        f"`invoke data --source TOP_DIR --data-dir {data_dir} --image-size "
        f"{stored_size_for(image_size)}`")
