"""Real TFDS builds (32 px config, 96x72 JPEGs) of TOP directories with bad inputs.

One module-wide source holds good rows plus one row per bad case and is built once; each
case is checked by its own test against that build.
"""

import csv
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxfundus.data import images
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES
from jaxfundus.data.tfds_dataset import DataError, build_dataset, load_dataset

SIZE = 32
# (filename, ID, age, sex, LR, diseases set): sex/LR case and "54.0" exercise normalisation.
GOOD = [
    ("000000_00.jpg", "00012", "67", "M", "R", {"AMD"}),
    ("000001_00.jpg", "00012", "67", "M", "L", set()),
    ("000002_01.jpg", "00345", "54.0", "f", "r", {"DR", "DM"}),
    ("000003_00.jpg", "01020", "71", "F", "L", {"Gla"}),
    ("gray.jpg", "20001", "38", "M", "R", {"RP"}),
    ("rgba.png", "20002", "80", "F", "L", {"AO"}),
    ("dup.jpg", "30000", "45", "M", "L", {"MH"}),
]
# filename -> (fields overriding a valid row, expected words in the reason)
BAD = {
    "missing.jpg": ({}, "missing"),
    "truncated.jpg": ({}, "truncated"),
    "empty.jpg": ({}, "empty"),
    "notimage.jpg": ({}, "not an image"),
    "../x.jpg": ({}, "outside img/"),
    "label2.jpg": ({"AMD": "2"}, "AMD='2'"),
    "badage.jpg": ({"age": "old"}, "age"),
    "badsex.jpg": ({"sex": "U"}, "sex"),
    "badeye.jpg": ({"LR": "both"}, "LR"),
}


def _pixels(seed: int) -> np.ndarray:
    """A smooth uint8[72, 96, 3] image distinct per seed (survives JPEG almost unchanged)."""
    y, x = np.mgrid[0:72, 0:96]
    rgb = np.stack([x * 2 + seed * 20, y * 3, np.full_like(x, 30 * seed)], -1)
    return (rgb % 256).astype(np.uint8)


def _csv_row(filename, patient_id="99999", age="50", sex="M", eye="R", diseases=(), **extra):
    row = {"filename": filename, "ID": patient_id, "age": age, "sex": sex, "LR": eye}
    row.update({d: "1" if d in diseases else "0" for d in DISEASES})
    row.update(extra)
    return row


def _write_csv(source, rows):
    with open(source / "data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _make_source(root):
    img = root / "img"
    img.mkdir(parents=True)
    rows = [_csv_row(*good) for good in GOOD]
    for seed, (filename, *_) in enumerate(GOOD):
        Image.fromarray(_pixels(seed)).save(img / filename, quality=95)
    Image.fromarray(_pixels(4)[..., 1]).save(img / "gray.jpg", quality=95)
    rgba = np.concatenate([_pixels(5), np.full((72, 96, 1), 77, np.uint8)], -1)
    Image.fromarray(rgba).save(img / "rgba.png")
    rows.append(_csv_row(*GOOD[-1]))  # exact duplicate of dup.jpg's row
    rows += [_csv_row("conflict.jpg", age="60"), _csv_row("conflict.jpg", age="61")]
    Image.fromarray(_pixels(9)).save(img / "conflict.jpg")
    for filename, (fields, _) in BAD.items():
        rows.append(_csv_row(filename, **fields))
        if filename not in ("missing.jpg", "../x.jpg"):
            Image.fromarray(_pixels(1)).save(img / filename, format="JPEG")
    Image.fromarray(_pixels(1)).save(root / "x.jpg")  # exists outside img/: must still be refused
    jpeg = (img / "truncated.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (img / "empty.jpg").write_bytes(b"")
    (img / "notimage.jpg").write_text("filename,ID\n")
    _write_csv(root, rows)
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _make_source(tmp_path_factory.mktemp("top"))


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    """(BuildResult, warnings) of the one shared build."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build_dataset(source, tmp_path_factory.mktemp("tfds"), image_size=SIZE)
    return result, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def loaded(built):
    return load_dataset(built[0].dataset_dir.parents[2], SIZE)


def _bad_reason(built, filename):
    reasons = [bad.reason for bad in built[0].bad_rows if bad.filename == filename]
    assert reasons, f"{filename} not reported: {built[0].bad_rows}"
    return reasons


@pytest.mark.parametrize("filename", list(BAD))
def test_bad_row_is_skipped_and_reported_with_its_reason(built, loaded, filename):
    for reason in _bad_reason(built, filename):
        assert BAD[filename][1] in reason
    assert filename not in set(loaded.index.filename)


def test_missing_image_is_counted_and_build_succeeds(built):
    result, _ = built
    assert result.n_missing == 1 and _bad_reason(built, "missing.jpg")
    assert result.n_rows == len(GOOD) + 3 + len(BAD) and result.n_kept == len(GOOD)


def test_grayscale_and_rgba_images_are_kept_as_rgb(loaded):
    for filename in ("gray.jpg", "rgba.png"):
        i = int(loaded.index.loc[loaded.index.filename == filename, "index"].item())
        image = loaded.source[i]["image"]
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    gray = loaded.source[int(loaded.index.index[loaded.index.filename == "gray.jpg"].item())]
    assert np.abs(gray["image"][..., 0].astype(int) - gray["image"][..., 2]).max() <= 2


def test_exact_duplicate_is_kept_once_with_a_warning(built, loaded):
    assert (loaded.index.filename == "dup.jpg").sum() == 1
    assert any("exact duplicate" in message for message in built[1])


def test_conflicting_duplicates_are_both_rejected(built, loaded):
    assert len(_bad_reason(built, "conflict.jpg")) == 2
    assert "conflict.jpg" not in set(loaded.index.filename)


def test_every_good_row_is_kept_exactly(source, loaded):
    assert sorted(loaded.index.filename) == sorted(good[0] for good in GOOD)
    for filename, patient_id, age, sex, eye, diseases in GOOD:
        i = int(loaded.index.loc[loaded.index.filename == filename, "index"].item())
        example = loaded.source[i]
        assert example["filename"].decode() == filename
        assert example["patient_id"].decode() == patient_id
        assert int(example["age"]) == int(float(age))
        assert (example["sex"].decode(), example["eye"].decode()) == (sex.upper(), eye.upper())
        expected_labels = [int(d in diseases) for d in DISEASES]
        assert example["labels"].dtype == np.int32 and example["labels"].tolist() == expected_labels
        expected = images.letterbox(images.load_rgb(source / "img" / filename), SIZE)
        assert np.abs(example["image"].astype(int) - expected).mean() < 4, filename


def test_report_file_lists_bad_rows_next_to_the_dataset(built):
    result, _ = built
    assert result.report_path == result.dataset_dir / "bad_rows.csv"
    with open(result.report_path, newline="") as f:
        reported = list(csv.DictReader(f))
    assert [(int(r["row"]), r["filename"], r["reason"]) for r in reported] == [
        tuple(bad) for bad in result.bad_rows
    ]
    assert {r["filename"] for r in reported} == {*BAD, "conflict.jpg"}


def test_already_built_dataset_is_reused(built, source):
    result, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in result.dataset_dir.iterdir()}
    again = build_dataset(source, result.dataset_dir.parents[2], image_size=SIZE)
    assert again.reused and again.fingerprint == result.fingerprint
    assert again.bad_rows == result.bad_rows and again.n_kept == result.n_kept
    assert {p: p.stat().st_mtime_ns for p in result.dataset_dir.iterdir()} == stamps


def test_reuse_refuses_a_dataset_built_from_another_csv(built, tmp_path):
    result, _ = built
    changed = _make_source(tmp_path / "top")
    with open(changed / "data.csv", "a") as f:
        f.write("extra.jpg,1,50,M,R,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(DataError, match="different data.csv"):
        build_dataset(changed, result.dataset_dir.parents[2], image_size=SIZE)


@pytest.mark.filterwarnings("ignore:.*exact duplicate")
def test_strict_mode_refuses_listing_bad_rows_and_writes_nothing(source, tmp_path):
    data_dir = tmp_path / "strict"
    with pytest.raises(DataError) as refused:
        build_dataset(source, data_dir, image_size=SIZE, strict=True)
    message = str(refused.value)
    assert "strict" in message
    for filename in [*BAD, "conflict.jpg"]:
        assert filename in message
    assert not data_dir.exists()


def test_missing_column_is_a_hard_error_naming_it(tmp_path):
    source = _make_source(tmp_path / "top")
    lines = (source / "data.csv").read_text().splitlines()
    header = lines[0].replace(",sex,", ",")
    (source / "data.csv").write_text("\n".join([header, *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="missing column.*sex"):
        build_dataset(source, tmp_path / "tfds", image_size=SIZE)
    assert not (tmp_path / "tfds").exists()


def test_load_dataset_index_matches_the_data_source(built, loaded):
    index = loaded.index
    assert list(index.columns) == [
        "index",
        "filename",
        "patient_id",
        "age",
        "sex",
        "eye",
        *DISEASES,
    ]
    assert len(index) == len(loaded.source) == len(GOOD)
    for row in index.itertuples(index=False):
        example = loaded.source[row.index]
        assert example["filename"].decode() == row.filename
        assert example["patient_id"].decode() == row.patient_id
        assert (int(example["age"]), example["sex"].decode(), example["eye"].decode()) == (
            row.age,
            row.sex,
            row.eye,
        )
        assert example["labels"].tolist() == [getattr(row, d) for d in DISEASES]
    assert loaded.fingerprint == built[0].fingerprint


def test_load_dataset_without_prepared_size_says_how_to_build(built):
    with pytest.raises(DataError, match=r"invoke data --source .* --image-size 64") as missing:
        load_dataset(built[0].dataset_dir.parents[2], 64)
    assert "prepared sizes there: 32" in str(missing.value)


@pytest.mark.slow
def test_build_and_load_work_without_tensorflow(source, tmp_path):
    """The runtime install has no TensorFlow: hide it from the import system and rerun."""
    script = textwrap.dedent(
        f"""
        import sys

        class HideTF:  # every finder misses tensorflow, as if it were not installed
            def __init__(self, inner):
                self.inner = inner
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "tensorflow":
                    return None
                return self.inner.find_spec(name, path, target)
            def __getattr__(self, attr):
                return getattr(self.inner, attr)

        sys.meta_path[:] = [HideTF(f) for f in sys.meta_path]
        from jaxfundus.data.tfds_dataset import build_dataset, load_dataset
        result = build_dataset({str(source)!r}, {str(tmp_path)!r}, image_size={SIZE})
        loaded = load_dataset({str(tmp_path)!r}, {SIZE})
        assert loaded.source[0]["image"].shape == ({SIZE}, {SIZE}, 3)
        assert "tensorflow" not in sys.modules
        print("kept", result.n_kept, "indexed", len(loaded.index))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"kept {len(GOOD)} indexed {len(GOOD)}" in done.stdout
