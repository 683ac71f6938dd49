"""Building the `tsukazaki_optos` TFDS dataset from a TOP source, and loading it back.

Prepared data lives at `data_dir/tsukazaki_optos/<size>px/<version>/` (ArrayRecord), with
`bad_rows.csv` (rows skipped), `metadata.json` (row counts, fingerprint, crop) and, for a
`crop="fov"` build, `fov.csv` (each image's field-of-view decision) beside it; see `layout`.
Only building needs the builder class (`tfds_builder/`, imported when a build runs); reading
goes through TFDS's read-only builder, which needs nothing but the prepared files.
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from jaxfundus.data import layout, top_source
from jaxfundus.data.labels import DISEASES
from jaxfundus.data.top_source import BadRow, DataError, FovRow
from jaxfundus.io import write_json_atomic

__all__ = ["BuildResult", "DataError", "LoadedDataset", "build_dataset", "load_dataset"]

INDEX_COLUMNS: tuple[str, ...] = ("index", "filename", "patient_id", "age", "sex", "eye", *DISEASES)
# Records read per call while building the index (array_record batches the file reads).
_INDEX_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """Outcome of `build_dataset`. `n_rows` counts data.csv rows, `n_kept` examples stored;
    `n_missing` of the `bad_rows` lacked their image file. `reused` if nothing was built.
    `crop` is the build's crop mode; with "fov", `fov_rows` holds each stored image's
    field-of-view decision (also in `fov_path`)."""

    dataset_dir: Path
    n_rows: int
    n_kept: int
    bad_rows: list[BadRow]
    n_missing: int
    report_path: Path
    fingerprint: str
    reused: bool = False
    crop: str = "none"
    fov_rows: list[FovRow] = dataclasses.field(default_factory=list)
    fov_path: Path | None = None


@dataclasses.dataclass(frozen=True)
class LoadedDataset:
    """A prepared dataset.

    `source[i]` decodes example i: {"image": uint8[S, S, 3], "labels": int32[9],
    "age": int32, and bytes "filename", "patient_id", "sex", "eye"}. `index` has one row per
    source index with columns `INDEX_COLUMNS` (text as str, one 0/1 int column per disease).
    """

    source: Sequence[dict[str, Any]]
    index: pd.DataFrame
    dataset_dir: Path
    image_size: int
    fingerprint: str
    source_dir: Path | None = None  # the TOP directory it was built from, when recorded
    crop: str = "none"  # "fov": photographs were cropped to their field of view


def build_dataset(
    source_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    strict: bool = False,
    crop: str = "none",
) -> BuildResult:
    """Prepares the dataset from a TOP-layout directory, or reuses an identical prior build.

    Bad rows are skipped and listed in the result and in `bad_rows.csv` in the dataset
    directory; rows whose image is missing are counted in `n_missing`. `crop="fov"` crops
    each photograph to its field of view before the letterbox (`jaxfundus.data.fov`); it is
    part of the fingerprint, so a plain build is never reused for a cropped one or back.

    Raises:
      DataError: strict and some rows are bad (nothing is written; the message lists them);
        no row is usable; the source is unusable (`top_source.SourceError`, also for an
        unknown crop); or a dataset prepared from a different data.csv, or with another crop,
        already occupies the target directory.
    """
    source_dir = Path(source_dir)
    top_source.check_source(source_dir)  # fail on a wrong path or header before TFDS writes
    top_source.check_crop(crop)
    _check_size(image_size)
    fingerprint = top_source.source_fingerprint(
        source_dir, layout.VERSION, layout.config_name(image_size), crop=crop
    )
    if layout.is_prepared(data_dir, image_size):
        return _reuse(_prepared(data_dir, image_size), fingerprint, strict, crop)
    if strict:
        # Refuse before TFDS creates any directory; the builder re-checks (it also serves
        # `tfds build`), which costs one more cheap 1/8-scale decode per image.
        scan = top_source.scan_source(source_dir, crop=crop)
        if scan.bad_rows:
            raise DataError(top_source.strict_refusal(scan))
    # The builder imports jaxfundus.data, so it is imported here, where it is used, rather
    # than at module level (jaxfundus' modules never import tfds_builder when loaded).
    from tfds_builder.tsukazaki_optos.tsukazaki_optos_dataset_builder import Builder

    builder = Builder(data_dir=os.fspath(data_dir), config=layout.config_name(image_size),
                      strict=strict, crop=crop)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(source_dir))
    )
    _record_shards(layout.version_dir(data_dir, image_size))
    return _result(_prepared(data_dir, image_size), reused=False)


def load_dataset(data_dir: str | os.PathLike, image_size: int) -> LoadedDataset:
    """Opens a prepared dataset for random access, plus its index read without decoding images.

    Raises:
      DataError: nothing is prepared at this size under data_dir.
    """
    _check_size(image_size)
    if not layout.is_prepared(data_dir, image_size):
        built = [size for size in layout.IMAGE_SIZES if layout.is_prepared(data_dir, size)]
        available = f" (prepared sizes there: {', '.join(map(str, built))})" if built else ""
        raise DataError(
            f"no prepared tsukazaki_optos dataset at {image_size} px under {data_dir}"
            f"{available}; run `invoke data --source TOP_DIR --image-size {image_size}`"
        )
    builder = _prepared(data_dir, image_size)
    rebuild = _rebuild_hint(data_dir, image_size, _recorded_source(builder.info.metadata))
    verify_shards(layout.version_dir(data_dir, image_size), rebuild)
    try:
        source = builder.as_data_source(split="train")
        # Skipping the image decoder turns index building into protobuf parsing only.
        light = builder.as_data_source(split="train",
                                       decoders={"image": tfds.decode.SkipDecoding()})
        index = _read_index(light)
    except Exception as error:  # noqa: BLE001 - a reader failure means damaged files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise DataError(f"{builder.data_dir} cannot be read ({reason}); {rebuild}") from None
    return LoadedDataset(
        source=source,
        index=index,
        dataset_dir=Path(builder.data_dir),
        image_size=image_size,
        fingerprint=builder.info.metadata["fingerprint"],
        source_dir=_recorded_source(builder.info.metadata),
        crop=builder.info.metadata.get("crop", "none"),
    )


def verify_shards(version_dir: Path, rebuild: str) -> None:
    """Check each ArrayRecord shard against the size and SHA-256 recorded after its build.

    Sizes are compared first (instant, catches truncation); hashing reads the shards once
    (about a second per few hundred MB), so damage shows before training, not in its middle.
    A dataset prepared before shards were recorded gets its record now. Raises DataError
    naming the damaged shard and how to rebuild.
    """
    record_path = version_dir / layout.SHARDS_NAME
    if not record_path.is_file():
        _record_shards(version_dir)
        return
    recorded = json.loads(record_path.read_text())
    present = {path.name: path for path in _shard_paths(version_dir)}
    for name, expected in recorded.items():
        if name not in present:
            raise DataError(f"{version_dir} is damaged: shard {name} is missing; {rebuild}")
        size = present[name].stat().st_size
        if size != expected["bytes"]:
            raise DataError(f"{version_dir} is damaged: shard {name} has {size} bytes, "
                            f"{expected['bytes']} were written; {rebuild}")
    for name, expected in recorded.items():
        if _sha256(present[name]) != expected["sha256"]:
            raise DataError(f"{version_dir} is damaged: shard {name} changed since it was "
                            f"built (SHA-256 differs); {rebuild}")


def _record_shards(version_dir: Path) -> None:
    record = {path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
              for path in _shard_paths(version_dir)}
    write_json_atomic(record, version_dir / layout.SHARDS_NAME)


def _shard_paths(version_dir: Path) -> list[Path]:
    return sorted(version_dir.glob(f"{layout.DATASET_NAME}-*.array_record-*"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rebuild_hint(data_dir: str | os.PathLike, image_size: int, source_dir: Path | None) -> str:
    directory = layout.version_dir(data_dir, image_size)
    source = source_dir or "TOP_DIR"
    return (f"delete {directory} and rebuild it with `invoke data --source {source} "
            f"--data-dir {data_dir} --image-size {image_size}` (the synthetic default data is "
            "rebuilt by the next command on its own)")


def _recorded_source(metadata) -> Path | None:
    return Path(metadata["source_dir"]) if metadata.get("source_dir") else None


def _check_size(image_size: int) -> None:
    if image_size not in layout.IMAGE_SIZES:
        raise DataError(
            f"image size {image_size} is not built by tsukazaki_optos; choose one of "
            f"{', '.join(map(str, layout.IMAGE_SIZES))}"
        )


def _prepared(data_dir: str | os.PathLike, image_size: int) -> tfds.core.DatasetBuilder:
    """A read-only TFDS builder over a completed build (features, metadata, data sources)."""
    return tfds.builder_from_directory(os.fspath(layout.version_dir(data_dir, image_size)))


def _reuse(builder: tfds.core.DatasetBuilder, fingerprint: str, strict: bool,
           crop: str) -> BuildResult:
    result = _result(builder, reused=True)
    if result.crop != crop:
        raise DataError(
            f"{result.dataset_dir} was prepared with --crop={result.crop}, not --crop={crop}; "
            "choose another data dir for this build (or delete that directory to rebuild)"
        )
    if result.fingerprint != fingerprint:
        raise DataError(
            f"{result.dataset_dir} was prepared from a different data.csv (fingerprint "
            f"{result.fingerprint}, source now {fingerprint}); delete that directory to rebuild "
            "or choose another data dir"
        )
    if strict and result.bad_rows:
        raise DataError(
            f"{result.dataset_dir} was prepared without strict mode and skipped "
            f"{len(result.bad_rows)} bad row(s):\n{top_source.format_bad_rows(result.bad_rows)}"
        )
    return result


def _result(builder: tfds.core.DatasetBuilder, *, reused: bool) -> BuildResult:
    dataset_dir = Path(builder.data_dir)
    metadata = builder.info.metadata
    report_path = dataset_dir / layout.REPORT_NAME
    crop = metadata.get("crop", "none")  # builds from before cropping existed are whole
    fov_path = dataset_dir / layout.FOV_NAME if crop == "fov" else None
    return BuildResult(
        dataset_dir=dataset_dir,
        n_rows=metadata["n_rows"],
        n_kept=metadata["n_kept"],
        bad_rows=top_source.read_bad_rows(report_path),
        n_missing=metadata["n_missing"],
        report_path=report_path,
        fingerprint=metadata["fingerprint"],
        reused=reused,
        crop=crop,
        fov_rows=top_source.read_fov_report(fov_path) if fov_path else [],
        fov_path=fov_path,
    )


def _read_index(source: Sequence[dict[str, Any]]) -> pd.DataFrame:
    columns: dict[str, list] = {name: [] for name in ("filename", "patient_id", "sex", "eye")}
    ages, labels = [], []
    for start in range(0, len(source), _INDEX_BATCH):
        keys = range(start, min(start + _INDEX_BATCH, len(source)))
        for example in source.__getitems__(keys):
            for name, values in columns.items():
                values.append(example[name].decode())
            ages.append(example["age"])
            labels.append(example["labels"])
    labels_array = np.asarray(labels, dtype=np.int64).reshape(-1, len(DISEASES))
    index = pd.DataFrame(
        {
            "index": np.arange(len(source), dtype=np.int64),
            **columns,
            "age": np.asarray(ages, dtype=np.int64),
            **{disease: labels_array[:, i] for i, disease in enumerate(DISEASES)},
        }
    )
    return index[list(INDEX_COLUMNS)]
