"""TFDS builder for the Tsukazaki Optos Public (TOP) fundus dataset (manual download).

Validation lives in `jaxfundus.data.top_source`, pixels in `jaxfundus.data.images` and the
on-disk layout (name, version, stored sizes) in `jaxfundus.data.layout`; this module only maps
their output onto TFDS features. Images are yielded as encoded JPEG bytes so that building works
without TensorFlow.
"""

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxfundus.data import fov, images, layout, top_source
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES

JPEG_QUALITY = 95
# Records encoded per thread-pool batch: bounds memory while keeping all cores busy.
_BATCH = 64


@dataclasses.dataclass(eq=False)
class TsukazakiOptosConfig(tfds.core.BuilderConfig):
    """Stores every photograph letterboxed to image_size x image_size."""

    image_size: int = 256


class Builder(tfds.core.GeneratorBasedBuilder):
    """TOP photographs letterboxed to a square, with patient, age, sex, eye and 9 labels."""

    name = layout.DATASET_NAME
    VERSION = tfds.core.Version(layout.VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        TsukazakiOptosConfig(
            name=layout.config_name(size),
            image_size=size,
            description=f"Images letterboxed to {size}x{size} (aspect kept, black bars).",
        )
        for size in layout.IMAGE_SIZES
    ]
    DEFAULT_BUILDER_CONFIG_NAME = layout.config_name(256)
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Obtain the Tsukazaki Optos Public (TOP) dataset and pass its directory as the manual
    dir (`--manual_dir SOURCE`). Expected layout:

      SOURCE/data.csv   header: {",".join(CSV_COLUMNS)}
      SOURCE/img/<filename>   e.g. img/000000_00.jpg, 1024x768 Optos JPEGs

    data.csv has 13,047 rows (one per image) from 5,389 patients. ID is the patient (keep it
    as text: leading zeros matter); the numeric filename prefix is NOT the patient. LR is the
    eye (L/R), sex M/F, and the disease columns are 0/1 flags. Public mirrors lack some image
    files: those rows are skipped and listed in bad_rows.csv next to the prepared data.
    """

    def __init__(self, *, strict: bool = False, crop: str = "none",
                 file_format: str | None = None, **kwargs):
        """strict: refuse to build if any data.csv row is bad, instead of skipping it.

        crop: "fov" crops each colour fundus photograph to its field of view before the
        letterbox (`jaxfundus.data.fov`; ultra-widefield images are kept whole, images without
        a usable field are bad rows); "none" stores photographs whole.

        file_format defaults to array_record (not TFDS's tfrecord) because training reads
        examples by index through `as_data_source()`.
        """
        top_source.check_crop(crop)
        self._strict = strict
        self._crop = crop
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(size, size, 3),
                        dtype=np.uint8,
                        encoding_format="jpeg",
                        doc="Letterboxed RGB photograph.",
                    ),
                    "filename": tfds.features.Text(doc="data.csv filename (under img/)."),
                    "patient_id": tfds.features.Text(doc="data.csv ID, verbatim."),
                    "age": tfds.features.Scalar(dtype=np.int32, doc="Age in years."),
                    "sex": tfds.features.Text(doc="M or F."),
                    "eye": tfds.features.Text(doc="L or R (data.csv LR)."),
                    "labels": tfds.features.Tensor(
                        shape=(len(DISEASES),),
                        dtype=np.int32,
                        doc=f"Multi-hot 0/1 flags in the order {', '.join(DISEASES)}.",
                    ),
                }
            ),
            # Filled in _split_generators; saved as metadata.json with the prepared data.
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source_dir = dl_manager.manual_dir
        scan = top_source.scan_source(source_dir, crop=self._crop)
        if self._strict and scan.bad_rows:
            raise top_source.DataError(top_source.strict_refusal(scan))
        if not scan.records:
            raise top_source.DataError(
                f"{source_dir}: none of the {scan.n_rows} data.csv rows is usable:\n"
                + top_source.format_bad_rows(scan.bad_rows)
            )
        # self.data_path is the temporary build directory here, so the report is published
        # together with the data (and vanishes with it if the build fails).
        top_source.write_bad_rows(self.data_path / layout.REPORT_NAME, scan.bad_rows)
        if self._crop == "fov":
            top_source.write_fov_report(self.data_path / layout.FOV_NAME, scan.records)
        self.info.metadata.update(
            fingerprint=top_source.source_fingerprint(
                source_dir, str(self.version), self.builder_config.name, crop=self._crop
            ),
            crop=self._crop,
            # Images cut to their field of view (the others were stored whole; see fov.csv).
            n_cropped=sum(r.field_of_view is not None and r.field_of_view.action == fov.CROP
                          for r in scan.records),
            n_rows=scan.n_rows,
            n_kept=len(scan.records),
            n_bad=len(scan.bad_rows),
            n_missing=scan.n_missing,
            # Where the photographs came from, so evaluation can find optional lesion masks.
            source_dir=str(Path(source_dir).resolve()),
        )
        return {"train": self._generate_examples(scan.records)}

    def _generate_examples(self, records: list[top_source.TopRecord]):
        size = self.builder_config.image_size

        def encode(record: top_source.TopRecord) -> bytes:
            found = record.field_of_view
            if found is None or found.action != fov.CROP:
                pixels = images.load_rgb(record.path, min_size=size)
            else:
                decoded = images.load_rgb(record.path, min_size=_decode_size(found, size))
                pixels = found.crop(decoded)
            return images.encode_jpeg(images.letterbox(pixels, size), JPEG_QUALITY)

        # Decoding, resizing and encoding release the GIL, so threads use every core.
        with ThreadPoolExecutor() as pool:
            for start in range(0, len(records), _BATCH):
                batch = records[start : start + _BATCH]
                for record, jpeg in zip(batch, pool.map(encode, batch), strict=True):
                    yield (
                        record.filename,
                        {
                            "image": jpeg,
                            "filename": record.filename,
                            "patient_id": record.patient_id,
                            "age": record.age,
                            "sex": record.sex,
                            "eye": record.eye,
                            "labels": np.asarray(record.labels, dtype=np.int32),
                        },
                    )


def _decode_size(found: fov.FieldOfView, size: int) -> int:
    """The JPEG draft size at which the field's box still spans >= `size` px both ways."""
    (height, width), (top, left, bottom, right) = found.shape, found.box
    share = min((bottom - top) / height, (right - left) / width)
    return math.ceil(size / max(share, 1e-6))
