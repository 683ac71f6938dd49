"""TOP source validation (`top_source.scan_source`) and image I/O (`images`), one case per test."""

import csv

import numpy as np
import pytest
from PIL import Image

from jaxfundus.data import images, top_source
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES


def _pixels(seed: int = 0, width: int = 96, height: int = 72) -> np.ndarray:
    """A smooth uint8[H, W, 3] image (JPEG keeps it close to the original)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 40 * seed % 256)], -1)
    return rgb.astype(np.uint8)


def _jpeg(path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed)).save(path, quality=95)


def _row(filename: str, **fields: str) -> dict[str, str]:
    row = {"filename": filename, "ID": "00012", "age": "67", "sex": "M", "LR": "R"}
    row.update({disease: "0" for disease in DISEASES})
    row.update(fields)
    return row


def _source(tmp_path, rows: list[dict[str, str]], columns=CSV_COLUMNS, jpegs=True):
    """A TOP directory with data.csv = rows and (if jpegs) a valid JPEG per plain filename."""
    (tmp_path / "img").mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if jpegs:
        for i, row in enumerate(rows):
            if "/" not in row["filename"] and row["filename"]:
                _jpeg(tmp_path / "img" / row["filename"], seed=i)
    return tmp_path


def _only_bad(scan: top_source.SourceScan) -> top_source.BadRow:
    assert len(scan.bad_rows) == 1, scan.bad_rows
    return scan.bad_rows[0]


def test_good_rows_are_kept_exactly(tmp_path):
    rows = [
        _row("a.jpg", ID="00012", age="67", sex="M", LR="R", AMD="1"),
        _row("b.jpg", ID="7", age="54.0", sex="f", LR="l", DR="1", DM="1"),
    ]
    scan = top_source.scan_source(_source(tmp_path, rows))
    assert scan.bad_rows == [] and scan.n_rows == 2 and scan.n_missing == 0
    a, b = scan.records
    assert (a.row, a.filename, a.patient_id, a.age, a.sex, a.eye) == (
        2,
        "a.jpg",
        "00012",
        67,
        "M",
        "R",
    )
    assert a.labels == (1, 0, 0, 0, 0, 0, 0, 0, 0)
    assert (b.patient_id, b.age, b.sex, b.eye) == ("7", 54, "F", "L")
    assert b.labels == tuple(int(d in ("DR", "DM")) for d in DISEASES)
    assert a.path == tmp_path / "img" / "a.jpg"


def test_missing_image_file_is_a_bad_row_counted_as_missing(tmp_path):
    source = _source(tmp_path, [_row("a.jpg"), _row("gone.jpg")])
    (source / "img" / "gone.jpg").unlink()
    scan = top_source.scan_source(source)
    bad = _only_bad(scan)
    assert (bad.row, bad.filename) == (3, "gone.jpg") and "missing" in bad.reason
    assert scan.n_missing == 1 and [r.filename for r in scan.records] == ["a.jpg"]


def test_truncated_jpeg_is_a_bad_row(tmp_path):
    source = _source(tmp_path, [_row("a.jpg"), _row("cut.jpg")])
    path = source / "img" / "cut.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    scan = top_source.scan_source(source)
    bad = _only_bad(scan)
    assert bad.filename == "cut.jpg" and "truncated" in bad.reason and scan.n_missing == 0


def test_empty_file_is_a_bad_row(tmp_path):
    source = _source(tmp_path, [_row("a.jpg"), _row("empty.jpg")])
    (source / "img" / "empty.jpg").write_bytes(b"")
    bad = _only_bad(top_source.scan_source(source))
    assert bad.filename == "empty.jpg" and "empty" in bad.reason


def test_non_image_file_is_a_bad_row(tmp_path):
    source = _source(tmp_path, [_row("a.jpg"), _row("notes.jpg")])
    (source / "img" / "notes.jpg").write_text("exported by mistake\n")
    bad = _only_bad(top_source.scan_source(source))
    assert bad.filename == "notes.jpg" and "not an image" in bad.reason


def test_grayscale_image_is_kept_and_loads_as_rgb(tmp_path):
    source = _source(tmp_path, [_row("gray.jpg")], jpegs=False)
    Image.fromarray(_pixels()[..., 0]).save(source / "img" / "gray.jpg")
    scan = top_source.scan_source(source)
    assert scan.bad_rows == [] and len(scan.records) == 1
    rgb = images.load_rgb(source / "img" / "gray.jpg")
    assert rgb.shape == (72, 96, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_rgba_image_is_kept_and_loads_as_rgb(tmp_path):
    source = _source(tmp_path, [_row("alpha.png")], jpegs=False)
    rgba = np.concatenate([_pixels(), np.full((72, 96, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba).save(source / "img" / "alpha.png")
    assert top_source.scan_source(source).bad_rows == []
    assert np.array_equal(images.load_rgb(source / "img" / "alpha.png"), _pixels())


@pytest.mark.parametrize("filename", ["../x.jpg", "img/../../x.jpg", "sub\\..\\..\\x.jpg"])
def test_filename_outside_img_is_refused(tmp_path, filename):
    source = _source(tmp_path, [_row("a.jpg"), _row(filename)])
    _jpeg(source / "x.jpg")  # exists, so refusal cannot be mistaken for "missing"
    bad = _only_bad(top_source.scan_source(source))
    assert bad.filename == filename and "outside img/" in bad.reason


def test_absolute_filename_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "x.jpg"
    _jpeg(outside)
    source = _source(tmp_path / "top", [_row(str(outside))], jpegs=False)
    bad = _only_bad(top_source.scan_source(source))
    assert "outside img/" in bad.reason


def test_subdirectory_inside_img_is_allowed(tmp_path):
    source = _source(tmp_path, [_row("2019/a.jpg")], jpegs=False)
    _jpeg(source / "img" / "2019" / "a.jpg")
    assert top_source.scan_source(source).records[0].filename == "2019/a.jpg"


def test_label_2_is_refused_naming_column_and_value(tmp_path):
    bad = _only_bad(
        top_source.scan_source(_source(tmp_path, [_row("a.jpg"), _row("b.jpg", Gla="2")]))
    )
    assert bad.filename == "b.jpg" and "Gla" in bad.reason and "'2'" in bad.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("age", "sixty"),
        ("age", "-1"),
        ("age", "61.5"),
        ("sex", "X"),
        ("sex", ""),
        ("LR", "B"),
        ("ID", ""),
    ],
)
def test_bad_demographics_are_refused(tmp_path, field, value):
    rows = [_row("a.jpg"), _row("b.jpg", **{field: value})]
    bad = _only_bad(top_source.scan_source(_source(tmp_path, rows)))
    assert bad.filename == "b.jpg" and field in bad.reason


def test_patient_id_keeps_leading_zeros(tmp_path):
    scan = top_source.scan_source(_source(tmp_path, [_row("a.jpg", ID="00007")]))
    assert scan.records[0].patient_id == "00007"


def test_missing_column_is_a_hard_error_naming_it(tmp_path):
    columns = [c for c in CSV_COLUMNS if c not in ("LR", "RP")]
    with pytest.raises(top_source.SourceError, match="missing column.*LR, RP"):
        top_source.scan_source(_source(tmp_path, [_row("a.jpg")], columns=columns))


def test_missing_data_csv_is_a_hard_error(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(top_source.SourceError, match="data.csv not found"):
        top_source.scan_source(tmp_path)


def test_exact_duplicate_row_is_kept_once_with_a_warning(tmp_path):
    source = _source(tmp_path, [_row("a.jpg"), _row("b.jpg"), _row("a.jpg")])
    with pytest.warns(UserWarning, match="1 exact duplicate.*line 4 = line 2"):
        scan = top_source.scan_source(source)
    assert [r.filename for r in scan.records] == ["a.jpg", "b.jpg"]
    assert scan.bad_rows == [] and scan.duplicates == [(4, 2)]


def test_conflicting_duplicates_are_both_refused(tmp_path):
    rows = [_row("a.jpg", age="60"), _row("b.jpg"), _row("a.jpg", age="61")]
    scan = top_source.scan_source(_source(tmp_path, rows))
    assert [r.filename for r in scan.records] == ["b.jpg"]
    assert [(b.row, b.filename) for b in scan.bad_rows] == [(2, "a.jpg"), (4, "a.jpg")]
    assert all("conflicting" in b.reason and "age" in b.reason for b in scan.bad_rows)


def test_short_row_is_refused(tmp_path):
    source = _source(tmp_path, [_row("a.jpg")])
    with open(source / "data.csv", "a") as f:
        f.write("b.jpg,00012,67\n")
    bad = _only_bad(top_source.scan_source(source))
    assert bad.row == 3 and "fields" in bad.reason


def test_bad_rows_report_round_trips(tmp_path):
    bad = [top_source.BadRow(3, "a, b.jpg", "label AMD='2' is not 0 or 1")]
    top_source.write_bad_rows(tmp_path / "bad_rows.csv", bad)
    assert top_source.read_bad_rows(tmp_path / "bad_rows.csv") == bad


def test_fingerprint_depends_on_csv_and_salt(tmp_path):
    source = _source(tmp_path, [_row("a.jpg")])
    first = top_source.source_fingerprint(source, "1.0.0", "64px")
    assert first == top_source.source_fingerprint(source, "1.0.0", "64px") and len(first) == 12
    assert first != top_source.source_fingerprint(source, "1.0.0", "32px")
    _source(tmp_path, [_row("a.jpg", age="68")], jpegs=False)
    assert first != top_source.source_fingerprint(source, "1.0.0", "64px")


def test_load_rgb_names_the_file_when_missing(tmp_path):
    with pytest.raises(images.ImageError, match=r"nope\.jpg: file is missing"):
        images.load_rgb(tmp_path / "nope.jpg")


def test_letterbox_pads_the_short_side_centred_with_black():
    boxed = images.letterbox(np.full((768, 1024, 3), 200, np.uint8), 64)
    assert boxed.shape == (64, 64, 3) and boxed.dtype == np.uint8
    assert (boxed[:8] == 0).all() and (boxed[56:] == 0).all()  # 1024x768 -> 64x48 + 8-px bars
    assert (boxed[8:56] == 200).all()
    tall = images.letterbox(np.full((100, 50, 3), 9, np.uint8), 32)
    assert (tall[:, :8] == 0).all() and (tall[:, 8:24] == 9).all() and (tall[:, 24:] == 0).all()


def _csv_line(filename: str, age: str = "67") -> str:
    return ",".join([filename, "00012", age, "M", "R", *["0"] * len(DISEASES)])


def _raw_source(tmp_path, text: str | bytes, images=("a.jpg", "b.jpg")):
    """A TOP directory whose data.csv is exactly `text` (str: written as UTF-8)."""
    for i, name in enumerate(images):
        _jpeg(tmp_path / "img" / name, seed=i)
    data = text.encode() if isinstance(text, str) else text
    (tmp_path / "data.csv").write_bytes(data)
    return tmp_path


def test_missing_img_directory_is_a_hard_error_naming_it(tmp_path):
    _source(tmp_path, [_row("a.jpg")])
    (tmp_path / "img" / "a.jpg").unlink()
    (tmp_path / "img").rmdir()
    with pytest.raises(top_source.SourceError, match=f"^{tmp_path / 'img'}/ not found"):
        top_source.scan_source(tmp_path)


def test_header_with_byte_order_mark_and_spaces_is_read(tmp_path):
    header = "\ufeff" + ", ".join(f" {name}" for name in CSV_COLUMNS)
    source = _raw_source(tmp_path, f"{header}\r\n{_csv_line('a.jpg')}\r\n")
    scan = top_source.scan_source(source)
    assert scan.bad_rows == [] and [r.filename for r in scan.records] == ["a.jpg"]
    assert (scan.records[0].row, scan.records[0].age) == (2, 67)


def test_blank_lines_are_skipped_and_rows_keep_their_line_numbers(tmp_path):
    header = ",".join(CSV_COLUMNS)
    text = f"{header}\n\n{_csv_line('a.jpg')}\n , ,\n\n{_csv_line('b.jpg', age='old')}\n\n"
    scan = top_source.scan_source(_raw_source(tmp_path, text))
    assert scan.n_rows == 2 and [(r.row, r.filename) for r in scan.records] == [(3, "a.jpg")]
    assert [(b.row, b.filename) for b in scan.bad_rows] == [(6, "b.jpg")]


def test_empty_filenames_are_each_refused_not_paired_as_duplicates(tmp_path):
    scan = top_source.scan_source(_source(tmp_path, [_row(""), _row("a.jpg"), _row("")]))
    assert [r.filename for r in scan.records] == ["a.jpg"]
    assert scan.bad_rows == [top_source.BadRow(2, "", "filename is empty"),
                             top_source.BadRow(4, "", "filename is empty")]
    assert top_source.format_bad_rows(scan.bad_rows).splitlines() == [
        "  line 2: <empty>: filename is empty", "  line 4: <empty>: filename is empty"]


@pytest.mark.parametrize("filename", ["C:x.jpg", "C:/x.jpg", "D:\\photos\\x.jpg"])
def test_windows_drive_path_is_refused(tmp_path, filename):
    source = _source(tmp_path, [_row("a.jpg"), _row(filename)])
    if "/" not in filename and "\\" not in filename:
        _jpeg(source / "img" / filename)  # a legal file name on Linux: refused all the same
    bad = _only_bad(top_source.scan_source(source))
    assert bad == top_source.BadRow(
        3, filename, f"filename {filename!r} points outside img/ (use a name relative to it)")


def test_age_above_130_is_refused_and_130_kept(tmp_path):
    rows = [_row("a.jpg", age="130"), _row("b.jpg", age="131")]
    scan = top_source.scan_source(_source(tmp_path, rows))
    assert [(r.filename, r.age) for r in scan.records] == [("a.jpg", 130)]
    assert _only_bad(scan) == top_source.BadRow(
        3, "b.jpg", "age '131' is not a whole number of years in 0..130")


def test_row_with_too_many_fields_is_refused(tmp_path):
    header = ",".join(CSV_COLUMNS)
    text = f"{header}\n{_csv_line('a.jpg')}\n{_csv_line('b.jpg')},extra\n"
    bad = _only_bad(top_source.scan_source(_raw_source(tmp_path, text)))
    assert bad == top_source.BadRow(
        3, "b.jpg", f"row has {len(CSV_COLUMNS) + 1} fields, the header has {len(CSV_COLUMNS)}")


def test_data_csv_that_is_not_utf8_is_one_error_naming_the_line(tmp_path):
    header = ",".join(CSV_COLUMNS)
    accented = _csv_line("caf\xe9.jpg")  # é as Latin-1: one byte 0xe9
    text = f"{header}\n{_csv_line('a.jpg')}\n{accented}\n".encode("latin-1")
    source = _raw_source(tmp_path, text)
    message = f"^{source / 'data.csv'}: line 3 is not UTF-8 text \\(byte 0xe9\\); save data.csv"
    with pytest.raises(top_source.SourceError, match=message):
        top_source.scan_source(source)
    with pytest.raises(top_source.SourceError, match=message):
        top_source.check_source(source)


def test_format_bad_rows_lists_each_row_up_to_the_limit():
    bad = [top_source.BadRow(row, f"{row}.jpg", "image file is missing") for row in range(2, 7)]
    assert top_source.format_bad_rows(bad, limit=2).splitlines() == [
        "  line 2: 2.jpg: image file is missing", "  line 3: 3.jpg: image file is missing",
        "  ... and 3 more"]
    assert len(top_source.format_bad_rows(bad, limit=None).splitlines()) == 5
    assert top_source.format_bad_rows(bad, limit=5) == top_source.format_bad_rows(bad, limit=None)
    assert top_source.format_bad_rows([]) == ""
