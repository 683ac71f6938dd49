"""Building the `tsukazaki_optos` TFDS dataset from a TOP source, and loading it back.

Prepared data lives at `data_dir/tsukazaki_optos/<size>px/<version>/` (ArrayRecord), with
`bad_rows.csv` (rows skipped) and `metadata.json` (row counts, fingerprint) beside it.
"""

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from jaxfundus.data import top_source
from jaxfundus.data.labels import DISEASES
from jaxfundus.data.top_source import BadRow, DataError
from tfds_builder.tsukazaki_optos.tsukazaki_optos_dataset_builder import (
    IMAGE_SIZES,
    REPORT_NAME,
    Builder,
    config_name,
    strict_refusal,
)

__all__ = ["BuildResult", "DataError", "LoadedDataset", "build_dataset", "load_dataset"]

INDEX_COLUMNS: tuple[str, ...] = ("index", "filename", "patient_id", "age", "sex", "eye", *DISEASES)
# Records read per call while building the index (array_record batches the file reads).
_INDEX_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class BuildResult:
    """Outcome of `build_dataset`. `n_rows` counts data.csv rows, `n_kept` examples stored;
    `n_missing` of the `bad_rows` lacked their image file. `reused` if nothing was built."""

    dataset_dir: Path
    n_rows: int
    n_kept: int
    bad_rows: list[BadRow]
    n_missing: int
    report_path: Path
    fingerprint: str
    reused: bool = False


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


def build_dataset(
    source_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    image_size: int = 256,
    strict: bool = False,
) -> BuildResult:
    """Prepares the dataset from a TOP-layout directory, or reuses an identical prior build.

    Bad rows are skipped and listed in the result and in `bad_rows.csv` in the dataset
    directory; rows whose image is missing are counted in `n_missing`.

    Raises:
      DataError: strict and some rows are bad (nothing is written; the message lists them);
        no row is usable; the source is unusable (`top_source.SourceError`); or a dataset
        prepared from a different data.csv already occupies the target directory.
    """
    source_dir = Path(source_dir)
    top_source.check_source(source_dir)  # fail on a wrong path or header before TFDS writes
    builder = _builder(data_dir, image_size, strict=strict)
    fingerprint = top_source.source_fingerprint(
        source_dir, str(builder.version), builder.builder_config.name
    )
    if _is_prepared(builder):
        return _reuse(builder, fingerprint, strict)
    if strict:
        # Refuse before TFDS creates any directory; the builder re-checks (it also serves
        # `tfds build`), which costs one more cheap 1/8-scale decode per image.
        scan = top_source.scan_source(source_dir)
        if scan.bad_rows:
            raise DataError(strict_refusal(scan))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(source_dir))
    )
    return _result(builder, reused=False)


def load_dataset(data_dir: str | os.PathLike, image_size: int) -> LoadedDataset:
    """Opens a prepared dataset for random access, plus its index read without decoding images.

    Raises:
      DataError: nothing is prepared at this size under data_dir.
    """
    builder = _builder(data_dir, image_size)
    if not _is_prepared(builder):
        built = [size for size in IMAGE_SIZES if _is_prepared(_builder(data_dir, size))]
        available = f" (prepared sizes there: {', '.join(map(str, built))})" if built else ""
        raise DataError(
            f"no prepared tsukazaki_optos dataset at {image_size} px under {data_dir}"
            f"{available}; run `invoke data --source TOP_DIR --image-size {image_size}`"
        )
    source = builder.as_data_source(split="train")
    # Skipping the image decoder turns index building into protobuf parsing only.
    light = builder.as_data_source(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    return LoadedDataset(
        source=source,
        index=_read_index(light),
        dataset_dir=Path(builder.data_dir),
        image_size=image_size,
        fingerprint=builder.info.metadata["fingerprint"],
        source_dir=_recorded_source(builder.info.metadata),
    )


def _recorded_source(metadata) -> Path | None:
    return Path(metadata["source_dir"]) if metadata.get("source_dir") else None


def _builder(data_dir: str | os.PathLike, image_size: int, strict: bool = False) -> Builder:
    if image_size not in IMAGE_SIZES:
        raise DataError(
            f"image size {image_size} is not built by tsukazaki_optos; choose one of "
            f"{', '.join(map(str, IMAGE_SIZES))}"
        )
    return Builder(data_dir=os.fspath(data_dir), config=config_name(image_size), strict=strict)


def _is_prepared(builder: Builder) -> bool:
    # TFDS publishes a version directory by renaming it once complete, with dataset_info.json
    # inside; checking the file directly avoids `is_prepared()`'s warning on absent configs.
    return (Path(builder.data_dir) / "dataset_info.json").is_file()


def _reuse(builder: Builder, fingerprint: str, strict: bool) -> BuildResult:
    result = _result(builder, reused=True)
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


def _result(builder: Builder, *, reused: bool) -> BuildResult:
    dataset_dir = Path(builder.data_dir)
    metadata = builder.info.metadata
    report_path = dataset_dir / REPORT_NAME
    return BuildResult(
        dataset_dir=dataset_dir,
        n_rows=metadata["n_rows"],
        n_kept=metadata["n_kept"],
        bad_rows=top_source.read_bad_rows(report_path),
        n_missing=metadata["n_missing"],
        report_path=report_path,
        fingerprint=metadata["fingerprint"],
        reused=reused,
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
