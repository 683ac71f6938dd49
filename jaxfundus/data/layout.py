"""How a prepared `tsukazaki_optos` dataset is laid out on disk: name, version, stored sizes.

Shared by the TFDS builder (`tfds_builder/`, which writes the data) and `jaxfundus.data` (which
reads it), so neither has to import the other. A prepared size lives in
`data_dir/tsukazaki_optos/<size>px/<version>/`: ArrayRecord shards, dataset_info.json,
metadata.json (row counts, fingerprint, crop) and the bad-rows report; a build with
`--crop=fov` adds the field-of-view report (one decision per stored image).
"""

import os
from pathlib import Path

DATASET_NAME = "tsukazaki_optos"
VERSION = "1.0.0"
# Square sizes (px) the builder stores; training reads the smallest one >= its image size.
IMAGE_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
REPORT_NAME = "bad_rows.csv"
FOV_NAME = "fov.csv"  # per stored image: cropped to which box, or kept whole and why
SHARDS_NAME = "shards.json"  # size and SHA-256 of each ArrayRecord shard, written after a build


def config_name(size: int) -> str:
    """BuilderConfig name for a stored image size, e.g. 256 -> "256px"."""
    return f"{size}px"


def version_dir(data_dir: str | os.PathLike, size: int) -> Path:
    """The directory holding the dataset stored at `size` px under `data_dir`."""
    return Path(data_dir) / DATASET_NAME / config_name(size) / VERSION


def is_prepared(data_dir: str | os.PathLike, size: int) -> bool:
    """True once a build at `size` px has completed under `data_dir`."""
    # TFDS publishes a version directory by renaming it once complete, with dataset_info.json
    # inside, so a half-written build never counts.
    return (version_dir(data_dir, size) / "dataset_info.json").is_file()


def stored_size_for(image_size: int) -> int:
    """The smallest stored size that holds `image_size` px without upsampling."""
    for size in IMAGE_SIZES:
        if size >= image_size:
            return size
    raise ValueError(f"image size {image_size} exceeds the largest stored size {IMAGE_SIZES[-1]}")
