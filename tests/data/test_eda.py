"""EDA on a tiny TOP-layout directory: correct counts, all files written, bad images tolerated."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxfundus.data.eda import FIGURES, eda_summary, write_eda
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES

# filename, ID, age, sex, LR, then the disease names set to 1.
ROWS = [
    ("a.jpg", 1, 60, "M", "L", ()),
    ("b.jpg", 1, 60, "M", "R", ("AMD",)),
    ("c.jpg", 2, 70, "F", "L", ("DR", "DM")),
    ("d.jpg", 2, 70, "F", "R", ("DR", "DM", "AMD")),
    ("e.jpg", 3, 45, "F", "L", ("Gla",)),
    ("f.jpg", 4, 80, "M", "R", ()),
    ("missing.jpg", 5, 55, "F", "L", ("RP",)),  # no file on disk
    ("corrupt.jpg", 5, 55, "F", "R", ("RP",)),  # not a JPEG
]


def make_top_dir(root):
    records = [
        (f, pid, age, sex, eye, *(int(d in ds) for d in DISEASES))
        for f, pid, age, sex, eye, ds in ROWS
    ]
    pd.DataFrame(records, columns=CSV_COLUMNS).to_csv(root / "data.csv", index=False)
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    for filename, *_ in ROWS[:6]:
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / filename)
    (root / "img" / "corrupt.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture
def top_dir(tmp_path):
    source = tmp_path / "top"
    source.mkdir()
    return make_top_dir(source)


def test_eda_summary_counts(top_dir):
    summary = eda_summary(pd.read_csv(top_dir / "data.csv"))
    assert summary["n_images"] == 8 and summary["n_patients"] == 5
    assert summary["images_per_patient"] == {"mean": 1.6, "median": 2.0, "max": 2}
    assert summary["age"]["mean"] == pytest.approx(61.875)
    assert summary["age"]["median"] == 60.0
    assert summary["sex_counts_images"] == {"F": 5, "M": 3}
    assert summary["sex_counts_patients"] == {"F": 3, "M": 2}
    assert summary["eye_counts"] == {"L": 4, "R": 4}
    expected_class = {"normal": 2, "AMD": 2, "DR": 2, "DM": 2, "Gla": 1, "RP": 2}
    assert summary["class_counts"] == {c: expected_class.get(c, 0) for c in summary["class_counts"]}
    expected_single = {"normal": 2, "AMD": 1, "Gla": 1, "RP": 2}
    assert summary["single_label_counts"] == {
        c: expected_single.get(c, 0) for c in summary["single_label_counts"]
    }
    assert summary["n_multi_label"] == 2
    assert summary["top_pairs"][0] == ("DR", "DM", 2)
    assert set(summary["top_pairs"][1:]) == {("AMD", "DR", 1), ("AMD", "DM", 1)}
    cooc = np.array(summary["cooccurrence"])
    np.testing.assert_array_equal(cooc, cooc.T)
    assert cooc[DISEASES.index("AMD"), DISEASES.index("AMD")] == 2


def test_write_eda_writes_all_outputs_deterministically(top_dir, tmp_path):
    summary_path = write_eda(top_dir, tmp_path / "eda", samples_per_class=2)
    assert summary_path == tmp_path / "eda" / "summary.md"
    for name in FIGURES:
        with Image.open(tmp_path / "eda" / name) as png:
            assert png.format == "PNG" and min(png.size) > 200
            # Non-trivial: a real plot has many distinct colours, not a blank canvas.
            assert len(png.convert("RGB").getcolors(maxcolors=1_000_000)) > 20
    text = summary_path.read_text()
    assert "- images (rows): 8" in text and "- patients: 5" in text
    assert "| DR + DM | 2 |" in text
    # Both RP images are missing or unreadable: the class is kept with zero samples shown.
    assert "| RP | 2 | 2 | 0 |" in text
    assert "| normal | 2 | 2 | 2 |" in text
    assert all(f"`{name}`" in text for name in FIGURES)

    again = write_eda(top_dir, tmp_path / "again", samples_per_class=2)
    assert again.read_text() == text
    for name in FIGURES:
        assert (again.parent / name).read_bytes() == (summary_path.parent / name).read_bytes()


def test_write_eda_without_any_disease(tmp_path):
    source = tmp_path / "normal_only"
    source.mkdir()
    make_top_dir(source)
    df = pd.read_csv(source / "data.csv")
    df[list(DISEASES)] = 0
    df.to_csv(source / "data.csv", index=False)
    text = write_eda(source, tmp_path / "eda", samples_per_class=1).read_text()
    assert "No image has two or more diseases." in text
    assert "| normal | 8 | 8 | 1 |" in text
