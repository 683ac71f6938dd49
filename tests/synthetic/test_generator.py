"""The procedural TOP-layout generator: layout, determinism, cohort statistics and masks."""

from __future__ import annotations

import collections
import csv
import json

import numpy as np
import pytest
from PIL import Image

from jaxfundus import synthetic
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES
from jaxfundus.synthetic.cohort import REAL_GROUPS, REAL_MIXES, plan_cohort

SMALL = dict(scale=0.01, min_images_per_class=3, width=128, height=96)


def _rows(out_dir) -> list[dict[str, str]]:
    with open(out_dir / "data.csv", newline="") as f:
        return list(csv.DictReader(f))


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _labels(row) -> tuple[str, ...]:
    return tuple(d for d in DISEASES if row[d] == "1")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small dataset with masks, drawn in-process."""
    out = tmp_path_factory.mktemp("synthetic") / "top"
    summary = synthetic.generate(out, seed=0, masks=True, workers=1, **SMALL)
    return out, summary


def test_csv_header_and_column_types(small):
    out, _ = small
    with open(out / "data.csv", newline="") as f:
        assert f.readline() == ",".join(CSV_COLUMNS) + "\n"
    rows = _rows(out)
    assert len(rows) > 100
    for row in rows:
        assert list(row) == list(CSV_COLUMNS)
        assert len(row["ID"]) == 5 and row["ID"].isdigit()
        assert row["age"].isdigit() and 18 <= int(row["age"]) <= 100
        assert row["sex"] in ("M", "F") and row["LR"] in ("L", "R")
        assert all(row[d] in ("0", "1") for d in DISEASES)
    assert any(row["ID"].startswith("0") for row in rows)  # IDs keep their leading zeros


def test_every_row_has_a_jpeg_of_the_requested_size(small):
    out, _ = small
    rows = _rows(out)
    assert sorted(p.name for p in (out / "img").iterdir()) == sorted(r["filename"] for r in rows)
    for row in rows:
        with Image.open(out / "img" / row["filename"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (SMALL["width"], SMALL["height"])


def test_filenames_are_exam_numbers_not_patient_ids(small):
    out, _ = small
    rows = _rows(out)
    exams = collections.defaultdict(set)
    for row in rows:
        exam, index = row["filename"].removesuffix(".jpg").split("_")
        assert len(exam) == 6 and exam.isdigit() and len(index) == 2 and index.isdigit()
        assert int(exam) != int(row["ID"])
        exams[exam].add(row["ID"])
    assert all(len(ids) == 1 for ids in exams.values())  # an exam belongs to one patient
    exams_per_patient = collections.Counter(
        row["ID"] for row in {r["filename"].split("_")[0]: r for r in rows}.values()
    )
    assert max(exams_per_patient.values()) > 1  # revisits get new exam numbers


def test_patients_have_several_images_and_consistent_eyes(small):
    out, _ = small
    rows = _rows(out)
    per_patient = collections.Counter(r["ID"] for r in rows)
    assert 1.6 < len(rows) / len(per_patient) < 3.2
    eyes = collections.defaultdict(set)
    for row in rows:
        eyes[row["ID"]].add(row["LR"])
    assert sum(len(e) == 2 for e in eyes.values()) > 5  # both eyes photographed
    labels_per_eye = collections.defaultdict(set)
    sex_per_patient = collections.defaultdict(set)
    for row in rows:
        labels_per_eye[row["ID"], row["LR"]].add(_labels(row))
        sex_per_patient[row["ID"]].add(row["sex"])
    assert all(len(v) == 1 for v in labels_per_eye.values())
    assert all(len(v) == 1 for v in sex_per_patient.values())


def test_summary_records_version_parameters_and_counts(small):
    out, summary = small
    assert json.loads((out / "synthetic.json").read_text()) == summary
    rows = _rows(out)
    assert summary["generator_version"] == synthetic.GENERATOR_VERSION
    assert summary["seed"] == 0
    assert summary["params"] == {"style": "optos", "width": 128, "height": 96, "severity": 1.0,
                                 "scale": 0.01, "min_images_per_class": 3, "masks": True}
    assert summary["n_images"] == len(rows)
    assert summary["n_patients"] == len({r["ID"] for r in rows})
    assert summary["n_normal"] == sum(not _labels(r) for r in rows)
    assert summary["label_counts"] == {d: sum(r[d] == "1" for r in rows) for d in DISEASES}


def test_masks_mark_lesions_of_diseased_images_only(small):
    out, _ = small
    for row in _rows(out):
        mask = _pixels(out / "masks" / row["filename"].replace(".jpg", ".png"))
        assert mask.dtype == np.uint8 and mask.shape == (SMALL["height"], SMALL["width"])
        assert set(np.unique(mask)) <= {0, 255}
        assert mask.any() == bool(_labels(row)), row


@pytest.mark.slow  # spawns worker processes
def test_same_seed_is_identical_across_worker_counts(small, tmp_path):
    out, _ = small
    again = tmp_path / "again"
    synthetic.generate(again, seed=0, masks=True, workers=2, **SMALL)
    assert (again / "data.csv").read_bytes() == (out / "data.csv").read_bytes()
    for row in _rows(out)[::5]:
        name = row["filename"]
        np.testing.assert_array_equal(_pixels(again / "img" / name), _pixels(out / "img" / name))


def test_another_seed_gives_another_dataset(small, tmp_path):
    out, _ = small
    other = tmp_path / "other"
    synthetic.generate(other, seed=1, workers=1, **SMALL)
    assert not (other / "masks").exists()
    assert (other / "data.csv").read_bytes() != (out / "data.csv").read_bytes()
    first = _rows(other)[0]["filename"]
    assert _pixels(other / "img" / first).shape == (SMALL["height"], SMALL["width"], 3)


def test_colour_style_is_a_round_field_on_black(tmp_path):
    synthetic.generate(tmp_path / "colour", style="colour", scale=0.001, min_images_per_class=1,
                       width=128, height=96, workers=1)
    for row in _rows(tmp_path / "colour"):
        rgb = _pixels(tmp_path / "colour" / "img" / row["filename"]).astype(int)
        assert rgb[:6, :6].mean() < 25 and rgb[-6:, -6:].mean() < 25  # black corners
        centre = rgb[40:56, 56:72].mean(axis=(0, 1))
        assert centre[0] > centre[2] + 40  # orange-red retina


def test_optos_style_is_red_green_pseudo_colour(small):
    out, _ = small
    rgb = np.stack([_pixels(out / "img" / r["filename"]) for r in _rows(out)[:20]])
    mean = rgb.reshape(-1, 3).mean(axis=0)
    assert mean[1] > 2 * mean[2] and mean[0] > 2 * mean[2]  # little blue


def test_cohort_follows_the_real_label_statistics():
    specs = plan_cohort(scale=1.0, min_images_per_class=0, seed=0)
    labels = collections.Counter(d for s in specs for d in s.labels)
    real = collections.Counter()
    for group, n in (REAL_GROUPS | REAL_MIXES).items():
        real.update({d: n for d in group})
    assert len(specs) == pytest.approx(13047, rel=0.01)
    assert len({s.patient_id for s in specs}) == pytest.approx(5389, rel=0.05)
    for disease in DISEASES:
        assert labels[disease] == pytest.approx(real[disease], rel=0.02, abs=2), disease
    ages = np.array([s.age for s in specs])
    assert 62 < ages.mean() < 68 and np.median(ages) > ages.mean()  # left-skewed
    assert 0.5 < np.mean([s.sex == "M" for s in specs]) < 0.6


def test_default_scale_keeps_real_proportions_with_a_floor():
    specs = plan_cohort(scale=0.1, min_images_per_class=40, seed=0)
    groups = collections.Counter(s.labels for s in specs)
    labels = collections.Counter(d for s in specs for d in s.labels)
    assert 1300 < len(specs) < 1500
    assert groups.most_common(1)[0][0] == ()  # normal is the largest group
    assert sum("DM" in s.labels for s in specs if "DR" in s.labels) > 0.8 * labels["DR"]
    assert labels["DM"] > labels["DR"] > labels["Gla"] > labels["RD"] > labels["RVO"]
    assert groups["AO",] == 40 and groups["DR",] == 40  # floored rare groups
    assert sum(len(g) > 1 and g != ("DR", "DM") for g in groups.elements()) > 30  # mixes


def test_refuses_to_overwrite_a_directory_that_is_not_synthetic(tmp_path):
    (tmp_path / "data.csv").write_text("real data\n")
    with pytest.raises(FileExistsError, match="synthetic.json"):
        synthetic.generate(tmp_path, workers=1, **SMALL)
    assert (tmp_path / "data.csv").read_text() == "real data\n"


def test_regenerating_replaces_a_previous_synthetic_dataset(tmp_path):
    tiny = dict(scale=0.001, min_images_per_class=1, width=64, height=48, workers=1)
    synthetic.generate(tmp_path, seed=0, masks=True, **tiny)
    synthetic.generate(tmp_path, seed=1, **tiny)
    names = {r["filename"] for r in _rows(tmp_path)}
    assert {p.name for p in (tmp_path / "img").iterdir()} == names
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize("bad, match", [
    (dict(style="fundus"), "style"),
    (dict(scale=0), "scale"),
    (dict(width=16), "width"),
    (dict(severity=-1), "severity"),
    (dict(workers=0), "workers"),
    (dict(seed=-1), "seed"),
    (dict(scale=1e-6, min_images_per_class=0), "no images"),
])
def test_bad_parameters_are_named(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        synthetic.generate(tmp_path, **(SMALL | bad))
