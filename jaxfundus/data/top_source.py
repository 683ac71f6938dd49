"""Reading and validating a TOP-layout source directory (`data.csv` + `img/`).

Layout: `SOURCE/data.csv` with the columns of `labels.CSV_COLUMNS` (extra columns are
ignored) and one image per row at `SOURCE/img/<filename>`. `scan_source` keeps every valid
row exactly and lists every other row with the reason it was refused; with `crop="fov"` it
also finds each photograph's field of view (`jaxfundus.data.fov`), and an image without a
usable one is a refused row too.
"""

import csv
import dataclasses
import hashlib
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

from PIL import Image

from jaxfundus.data import fov, images
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES

CSV_NAME = "data.csv"
IMAGE_DIR = "img"
MISSING_REASON = "image file is missing"
_MAX_AGE = 130


class DataError(Exception):
    """Input data the user has to fix; the message says what and where (CLIs print it as is)."""


class SourceError(DataError):
    """The source directory or data.csv as a whole is unusable (no per-row fallback)."""


class BadRow(NamedTuple):
    """A refused data.csv row. `row` is the line number in data.csv (the header is line 1)."""

    row: int
    filename: str
    reason: str


class FovRow(NamedTuple):
    """The field-of-view decision for one stored row (`--crop=fov`): `action` crop or keep,
    the box (top, left, bottom, right; bottom/right exclusive) in pixels of the photograph of
    `height` x `width` (the whole photograph when kept), and why."""

    row: int
    filename: str
    action: str
    top: int
    left: int
    bottom: int
    right: int
    height: int
    width: int
    reason: str

    def describe(self) -> str:
        """The decision in one line, as `fov.FieldOfView.describe` words it."""
        return fov.describe(self.action, (self.top, self.left, self.bottom, self.right),
                            (self.height, self.width), self.reason)


@dataclasses.dataclass(frozen=True)
class TopRecord:
    """One valid data.csv row. `labels` has one 0/1 flag per `labels.DISEASES`, in order;
    `field_of_view` is its field of view when the scan looked for one (`crop="fov"`)."""

    row: int
    filename: str
    patient_id: str
    age: int
    sex: str  # "M" or "F"
    eye: str  # "L" or "R"
    labels: tuple[int, ...]
    path: Path
    field_of_view: fov.FieldOfView | None = None

    def fov_row(self) -> FovRow:
        """This record's line of the field-of-view report (it must have a `field_of_view`)."""
        found = self.field_of_view
        return FovRow(self.row, self.filename, found.action, *found.box, *found.shape,
                      found.reason)


@dataclasses.dataclass(frozen=True)
class SourceScan:
    """Result of `scan_source`: `records` in data.csv order, then the refused rows.

    `n_rows` counts data rows in data.csv; `n_missing` counts the bad rows whose image file
    does not exist (public mirrors of TOP lack some files); `duplicates` lists
    (row, kept_row) for exact duplicate rows that were dropped.
    """

    source_dir: Path
    n_rows: int
    records: list[TopRecord]
    bad_rows: list[BadRow]
    n_missing: int
    duplicates: list[tuple[int, int]]


def scan_source(source_dir: str | os.PathLike, crop: str = "none") -> SourceScan:
    """Reads `source_dir/data.csv`, validates every row and decodes every image.

    Row rules: labels must be 0/1; age a whole number 0..130; sex M/F and LR L/R (any case,
    stored upper-case); ID any non-empty string (kept verbatim, leading zeros included);
    filename a relative path inside img/. Exact duplicate rows are kept once (with a
    warning); rows sharing a filename but differing elsewhere are all refused. Images that
    are missing, empty, truncated or not images are refused; grayscale/RGBA ones are fine.

    Images are decoded at 1/8 scale (JPEG DCT scaling), which still reads every byte, on
    `os.cpu_count()` threads. With `crop="fov"` they are decoded at no less than
    `fov.WORK_SIZE` px and each record gets its field of view (`TopRecord.field_of_view`, the
    box in pixels of the full photograph); a black image or a tiny field is a bad row.

    Raises:
      SourceError: data.csv or img/ is missing, or data.csv lacks required columns.
    """
    check_source(source_dir)
    check_crop(crop)
    source_dir = Path(source_dir)
    csv_path = source_dir / CSV_NAME
    image_dir = source_dir / IMAGE_DIR
    rows = _read_rows(csv_path)
    bad_rows: list[BadRow] = []
    candidates, duplicates = _resolve_duplicates(rows, bad_rows)
    records = []
    for raw in candidates:
        record_or_reason = _parse_row(raw, image_dir)
        if isinstance(record_or_reason, str):
            bad_rows.append(BadRow(raw.row, raw.values["filename"], record_or_reason))
        else:
            records.append(record_or_reason)

    records, image_bad = _check_images(records, crop)
    bad_rows.extend(image_bad)
    bad_rows.sort()
    if duplicates:
        shown = ", ".join(f"line {row} = line {kept}" for row, kept in duplicates[:10])
        more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
        warnings.warn(
            f"{csv_path}: {len(duplicates)} exact duplicate row(s) kept once: {shown}{more}",
            stacklevel=2,
        )
    return SourceScan(
        source_dir=source_dir,
        n_rows=len(rows),
        records=records,
        bad_rows=bad_rows,
        n_missing=sum(bad.reason == MISSING_REASON for bad in image_bad),
        duplicates=duplicates,
    )


def check_source(source_dir: str | os.PathLike) -> None:
    """Cheap whole-source checks: data.csv with every required column, and img/.

    Raises:
      SourceError: naming the missing file, directory or column(s).
    """
    csv_path = Path(source_dir) / CSV_NAME
    image_dir = Path(source_dir) / IMAGE_DIR
    if not csv_path.is_file():
        raise SourceError(
            f"{csv_path} not found: the TOP source directory must hold {CSV_NAME} and "
            f"{IMAGE_DIR}/ (check the --source path)"
        )
    if not image_dir.is_dir():
        raise SourceError(f"{image_dir}/ not found: TOP images belong in {IMAGE_DIR}/<filename>")
    _read_header(csv.reader(_csv_lines(csv_path)), csv_path)


def check_crop(crop: str) -> None:
    """SourceError unless `crop` is one of `fov.CROP_MODES`."""
    if crop not in fov.CROP_MODES:
        raise SourceError(f"crop {crop!r} is not one of: {', '.join(fov.CROP_MODES)}")


def source_fingerprint(source_dir: str | os.PathLike, *salt: str, crop: str = "none") -> str:
    """Short stable hash (12 hex digits) of data.csv's bytes plus `salt` (version, config) and
    the crop mode: "none" adds nothing (builds made before cropping existed keep their
    fingerprint), any other mode does, so a cropped build never passes for a plain one."""
    csv_path = Path(source_dir) / CSV_NAME
    try:
        digest = hashlib.sha256(csv_path.read_bytes())
    except FileNotFoundError:
        raise SourceError(f"{csv_path} not found (check the --source path)") from None
    for part in (*salt, *(() if crop == "none" else (f"crop={crop}",))):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:12]


def write_bad_rows(path: str | os.PathLike, bad_rows: Iterable[BadRow]) -> None:
    """Writes a CSV report with columns row, filename, reason."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(BadRow._fields)
        writer.writerows(bad_rows)


def read_bad_rows(path: str | os.PathLike) -> list[BadRow]:
    """Reads a report written by `write_bad_rows`."""
    with open(path, newline="", encoding="utf-8") as f:
        return [BadRow(int(r["row"]), r["filename"], r["reason"]) for r in csv.DictReader(f)]


def write_fov_report(path: str | os.PathLike, records: Iterable[TopRecord]) -> None:
    """Writes one FovRow per record (records scanned with `crop="fov"`) as CSV."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FovRow._fields)
        writer.writerows(record.fov_row() for record in records)


def read_fov_report(path: str | os.PathLike) -> list[FovRow]:
    """Reads a report written by `write_fov_report`."""
    text = {"filename", "action", "reason"}
    with open(path, newline="", encoding="utf-8") as f:
        return [FovRow(**{k: v if k in text else int(v) for k, v in r.items()})
                for r in csv.DictReader(f)]


def format_bad_rows(bad_rows: Sequence[BadRow], limit: int | None = 50) -> str:
    """One line per bad row (`line N: filename: reason`), at most `limit` (None: all)."""
    lines = [f"  line {bad.row}: {bad.filename or '<empty>'}: {bad.reason}" for bad in bad_rows]
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"  ... and {len(lines) - limit} more"]
    return "\n".join(lines)


def strict_refusal(scan: SourceScan) -> str:
    """The strict-mode error message: every bad row (no report file is written), and what to do."""
    listing = format_bad_rows(scan.bad_rows, limit=None)
    return (
        f"{scan.source_dir / CSV_NAME}: {len(scan.bad_rows)} of {scan.n_rows} rows "
        f"are bad and strict mode refuses to build:\n{listing}\n"
        "Fix or remove these rows, or build without strict mode to skip them."
    )


def _csv_lines(csv_path: Path) -> io.StringIO:
    """data.csv's text for csv.reader; SourceError naming the line of a byte that is not UTF-8."""
    data = csv_path.read_bytes()
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise SourceError(
            f"{csv_path}: line {line} is not UTF-8 text (byte 0x{data[error.start]:02x}); "
            "save data.csv as UTF-8 (CSV UTF-8 in spreadsheet programs)"
        ) from None
    return io.StringIO(text, newline="")


def _read_header(reader, csv_path: Path) -> list[str]:
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise SourceError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; the header must contain "
            f"{','.join(CSV_COLUMNS)}"
        )
    return header


class _RawRow(NamedTuple):
    row: int
    values: dict[str, str]  # every header column, stripped; "" where the row is short
    width_error: str | None


def _read_rows(csv_path: Path) -> list[_RawRow]:
    """Every non-blank data row with its line number; checks the header first."""
    reader = csv.reader(_csv_lines(csv_path))
    header = _read_header(reader, csv_path)
    rows = []
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue  # blank line, e.g. a trailing newline from an editor
        padded = [*fields, *[""] * (len(header) - len(fields))]
        values = {name: value.strip() for name, value in zip(header, padded, strict=False)}
        width_error = None
        if len(fields) != len(header):
            width_error = f"row has {len(fields)} fields, the header has {len(header)}"
        rows.append(_RawRow(reader.line_num, values, width_error))
    return rows


def _resolve_duplicates(
    rows: list[_RawRow], bad_rows: list[BadRow]
) -> tuple[list[_RawRow], list[tuple[int, int]]]:
    """Keeps the first of identical rows; refuses every row of a conflicting filename."""
    by_filename: dict[str, list[_RawRow]] = {}
    for raw in rows:
        by_filename.setdefault(raw.values["filename"], []).append(raw)
    kept, duplicates = [], []
    for raw in rows:
        group = by_filename[raw.values["filename"]]
        if len(group) == 1 or not raw.values["filename"]:
            kept.append(raw)
            continue
        first = group[0]
        differing = [
            name
            for name in CSV_COLUMNS
            if any(other.values[name] != first.values[name] for other in group)
        ]
        if differing:
            lines = ", ".join(str(other.row) for other in group)
            reason = f"conflicting duplicate rows (lines {lines}) differ in {', '.join(differing)}"
            bad_rows.append(BadRow(raw.row, raw.values["filename"], reason))
        elif raw is first:
            kept.append(raw)
        else:
            duplicates.append((raw.row, first.row))
    return kept, duplicates


def _parse_row(raw: _RawRow, image_dir: Path) -> TopRecord | str:
    """A TopRecord, or the reason the row is refused."""
    if raw.width_error:
        return raw.width_error
    values = raw.values
    filename = values["filename"]
    reason = _check_filename(filename)
    if reason:
        return reason
    if not values["ID"]:
        return "ID is empty"
    age = _parse_age(values["age"])
    if age is None:
        return f"age {values['age']!r} is not a whole number of years in 0..{_MAX_AGE}"
    sex = values["sex"].upper()
    if sex not in ("M", "F"):
        return f"sex {values['sex']!r} is not M or F"
    eye = values["LR"].upper()
    if eye not in ("L", "R"):
        return f"LR {values['LR']!r} is not L or R"
    labels = []
    for disease in DISEASES:
        if values[disease] not in ("0", "1"):
            return f"label {disease}={values[disease]!r} is not 0 or 1"
        labels.append(int(values[disease]))
    return TopRecord(
        row=raw.row,
        filename=filename,
        patient_id=values["ID"],
        age=age,
        sex=sex,
        eye=eye,
        labels=tuple(labels),
        path=image_dir / filename,
    )


def _check_filename(filename: str) -> str | None:
    """Refuses names that are empty or could point outside img/ (checked lexically so that
    a symlinked img/ directory still works)."""
    if not filename:
        return "filename is empty"
    posix = PurePosixPath(filename)
    if (
        posix.is_absolute()
        or ".." in posix.parts
        or "\\" in filename
        or PureWindowsPath(filename).drive
    ):
        return f"filename {filename!r} points outside {IMAGE_DIR}/ (use a name relative to it)"
    return None


def _parse_age(text: str) -> int | None:
    try:
        age = float(text)
    except ValueError:
        return None
    # Spreadsheet exports sometimes write "65.0"; anything fractional is a data error.
    if not age.is_integer() or not 0 <= age <= _MAX_AGE:
        return None
    return int(age)


def _check_images(records: list[TopRecord],
                  crop: str = "none") -> tuple[list[TopRecord], list[BadRow]]:
    """Splits records into usable ones (with their field of view when `crop` is "fov") and bad
    rows for missing or undecodable images (and, cropping, images without a usable field)."""

    def check(record: TopRecord) -> TopRecord | str:
        if not record.path.is_file():
            return MISSING_REASON
        try:
            # The smallest DCT scale still parses every byte, so truncation shows; the field of
            # view needs no more than fov.WORK_SIZE px.
            pixels = images.load_rgb(record.path, min_size=fov.WORK_SIZE if crop == "fov" else 1)
        except images.ImageError as err:
            return err.reason
        if crop != "fov":
            return record
        try:
            found = fov.detect_fov(pixels)
        except fov.FieldOfViewError as err:
            return str(err)
        found = found.scaled_to(_photograph_shape(record.path))
        return dataclasses.replace(record, field_of_view=found)

    # Decoding releases the GIL, so threads scale with cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = list(pool.map(check, records))
    good = [result for result in results if isinstance(result, TopRecord)]
    bad = [
        BadRow(record.row, record.filename, result)
        for record, result in zip(records, results, strict=True)
        if isinstance(result, str)
    ]
    return good, bad


# EXIF orientations that turn the stored picture by 90 degrees (load_rgb applies them).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def _photograph_shape(path: Path) -> tuple[int, int]:
    """(height, width) of the image file as `images.load_rgb` returns it at full size, from
    its header alone."""
    with Image.open(path) as img:
        width, height = img.size
        if img.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    return height, width
