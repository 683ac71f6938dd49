"""Field-of-view crop (`invoke data --crop=fov`): the detector on images whose field is known
(the generator's colour style, skimage's real fundus photograph, also placed off-centre on a
large black canvas), ultra-widefield images kept whole, unusable images as bad rows, and real
TFDS builds that record the crop."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from jaxfundus import commands
from jaxfundus.data import fov, layout, top_source
from jaxfundus.data.labels import CSV_COLUMNS, DISEASES
from jaxfundus.data.tfds_dataset import DataError, build_dataset, load_dataset
from jaxfundus.synthetic import generate
from jaxfundus.synthetic.anatomy import layout as eye_layout
from jaxfundus.synthetic.anatomy import sample_look

SIZE = 64  # stored size of the test builds
CANVAS = (3000, 4000)  # (height, width) of the black canvas the photograph is placed on
OFFSET = (300, 2200)  # (top, left) of the photograph on it: far off-centre
BLACK = 20  # a pixel whose brightest channel is at most this is background


def _disc_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the non-black pixels: a reference for the field that
    shares nothing with the detector (no smoothing, threshold or components)."""
    bright = image.max(-1) > BLACK
    rows, columns = np.flatnonzero(bright.any(1)), np.flatnonzero(bright.any(0))
    return rows[0], columns[0], rows[-1] + 1, columns[-1] + 1


def _contains(box, inner) -> bool:
    return box[0] <= inner[0] and box[1] <= inner[1] and box[2] >= inner[2] and box[3] >= inner[3]


def _write_source(root, images: dict[str, np.ndarray]):
    """A TOP directory with one row (a distinct patient) per image."""
    (root / "img").mkdir(parents=True)
    with open(root / "data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for i, (name, pixels) in enumerate(images.items()):
            Image.fromarray(pixels).save(root / "img" / name, quality=95)
            writer.writerow({"filename": name, "ID": f"{i:05d}", "age": "60", "sex": "F",
                             "LR": "R", **{d: "0" for d in DISEASES}})
    return root


@pytest.fixture(scope="module")
def retina():
    return skimage_data.retina()  # uint8[1411, 1411, 3], a real colour fundus photograph


@pytest.fixture(scope="module")
def off_centre(retina):
    canvas = np.zeros((*CANVAS, 3), np.uint8)
    top, left = OFFSET
    canvas[top:top + retina.shape[0], left:left + retina.shape[1]] = retina
    return canvas


def test_colour_generator_crop_box_fits_the_known_disc(tmp_path):
    width, height = 256, 192
    generate(tmp_path, scale=0.002, seed=1, style="colour", width=width, height=height,
             min_images_per_class=1, workers=1)
    # The generator's own geometry of the field (centre and radius do not depend on the eye).
    rng = np.random.default_rng(0)
    geometry = eye_layout("colour", width, height, "R", sample_look(rng), rng)
    (cx, cy), (radius, _) = geometry.field_centre, geometry.field_axes
    disc = (cy - radius, cx - radius, cy + radius, cx + radius)
    slack = fov.MARGIN * 2 * radius + 3  # the margin, the anti-aliased edge, whole pixels
    paths = sorted((tmp_path / "img").iterdir())[:6]
    for path in paths:
        found = fov.detect_fov(np.asarray(Image.open(path).convert("RGB")))
        assert found.action == fov.CROP, found.reason
        assert _contains(found.box, np.round(disc).astype(int) + [1, 1, -1, -1])
        assert all(abs(a - b) <= slack for a, b in zip(found.box, disc, strict=True)), found.box


def test_real_photograph_on_a_large_black_canvas_is_found(retina, off_centre):
    found = fov.detect_fov(off_centre)
    assert found.action == fov.CROP and found.shape == CANVAS
    disc = _disc_box(off_centre)
    assert _contains(found.box, disc)
    # Tight: no more than the margin (2% of the disc) and two pixels of the detector's reduced
    # copy (4000 px wide -> WORK_SIZE) beyond the disc.
    slack = fov.MARGIN * retina.shape[0] + 2 * max(CANVAS) / fov.WORK_SIZE
    assert all(abs(a - b) <= slack for a, b in zip(found.box, disc, strict=True)), found.box
    alone = fov.detect_fov(retina)
    assert alone.action == fov.CROP and _contains(alone.box, _disc_box(retina))


def test_box_found_at_a_reduced_size_scales_to_the_full_photograph(off_centre):
    small = off_centre[::8, ::8]
    scaled = fov.detect_fov(small).scaled_to(off_centre.shape[:2])
    assert scaled.shape == CANVAS
    assert _contains(scaled.box, _disc_box(off_centre))
    assert scaled.crop(off_centre).shape[:2] == (scaled.box[2] - scaled.box[0],
                                                 scaled.box[3] - scaled.box[1])


def test_ultra_widefield_generator_image_is_kept_whole_and_says_why(tmp_path):
    generate(tmp_path, scale=0.002, seed=1, style="optos", width=256, height=192,
             min_images_per_class=1, workers=1)
    for path in sorted((tmp_path / "img").iterdir())[:6]:
        image = np.asarray(Image.open(path).convert("RGB"))
        found = fov.detect_fov(image)
        assert found.action == fov.KEEP and found.box == (0, 0, 192, 256)
        assert "ultra-widefield" in found.reason and found.border_fraction > 0.5
        assert np.array_equal(found.crop(image), image)


def test_a_field_that_is_not_round_is_kept_whole():
    """An ultra-widefield picture letterboxed with black bars (it touches only the sides of
    its frame): the border rule alone would crop it, the circle test refuses."""
    image = np.zeros((300, 300, 3), np.uint8)
    image[60:240] = 150
    found = fov.detect_fov(image)
    assert found.action == fov.KEEP and "not round" in found.reason


@pytest.mark.parametrize(("image", "words"), [
    (np.zeros((200, 300, 3), np.uint8), "black"),
    (np.full((200, 300, 3), 4, np.uint8), "black"),
    (np.pad(np.full((8, 8, 3), 200, np.uint8), ((100, 100), (150, 150), (0, 0))), "too small"),
])
def test_unusable_images_raise_one_line_errors(image, words):
    with pytest.raises(fov.FieldOfViewError, match=words) as error:
        fov.detect_fov(image)
    assert "\n" not in str(error.value)


def test_crop_build_of_the_off_centre_photograph_is_mostly_retina(tmp_path, off_centre):
    source = _write_source(tmp_path / "source", {"canvas.jpg": off_centre,
                                                 "black.jpg": np.zeros((300, 400, 3), np.uint8)})
    lines = []
    result = commands.prepare_data(source=str(source), data_dir=str(tmp_path / "fov"),
                                   image_size=SIZE, crop="fov", log=lines.append)
    # The crop box is printed, in pixels of the photograph, and holds the disc.
    [line] = [line for line in lines if "canvas.jpg" in line]
    row = result.fov_rows[0]
    assert f"rows {row.top}-{row.bottom}, columns {row.left}-{row.right} of 3000x4000" in line
    assert _contains((row.top, row.left, row.bottom, row.right), _disc_box(off_centre))
    # The black image is a bad row with its reason, in bad_rows.csv like any other.
    [bad] = result.bad_rows
    assert bad.filename == "black.jpg" and "black" in bad.reason
    assert top_source.read_bad_rows(result.report_path) == [bad]
    assert any("black.jpg" in line and "black" in line for line in lines)

    stored = load_dataset(tmp_path / "fov", SIZE)
    assert stored.crop == "fov"
    image = stored.source[0]["image"]
    retina = image.max(-1) > BLACK
    assert retina.mean() > 0.68  # a disc filling the square covers pi/4 of it, less the margin
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    inscribed = np.hypot(y - SIZE / 2, x - SIZE / 2) < 0.45 * SIZE
    assert retina[inscribed].mean() > 0.99  # black only in the corners the disc does not reach

    # Without the crop the same photograph is mostly black canvas.
    plain = build_dataset(source, tmp_path / "plain", image_size=SIZE)
    assert plain.crop == "none" and plain.fov_path is None
    assert plain.fingerprint != result.fingerprint  # a cropped build never passes for a plain one
    whole = load_dataset(tmp_path / "plain", SIZE).source[0]["image"]
    assert (whole.max(-1) > BLACK).mean() < 0.2


def test_ultra_widefield_build_keeps_every_image_and_records_why(tiny_data, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_data.source_dir, source)  # Optos-style generator images
    result = build_dataset(source, tmp_path / "fov", image_size=32, crop="fov")
    assert result.bad_rows == [] and len(result.fov_rows) == result.n_kept
    assert all(row.action == fov.KEEP and "ultra-widefield" in row.reason
               for row in result.fov_rows)
    metadata = load_dataset(tmp_path / "fov", 32)
    plain = load_dataset(tiny_data.data_dir, 32)
    # Kept whole: the stored pictures are the plain build's, byte for byte.
    for i in (0, len(plain.index) - 1):
        assert np.array_equal(metadata.source[i]["image"], plain.source[i]["image"])
    assert metadata.crop == "fov" and plain.crop == "none"


def test_a_plain_build_is_not_reused_for_a_crop_build(tmp_path, retina):
    source = _write_source(tmp_path / "source", {"retina.jpg": retina[::4, ::4]})
    build_dataset(source, tmp_path / "data", image_size=32)
    with pytest.raises(DataError, match="prepared with --crop=none, not --crop=fov"):
        build_dataset(source, tmp_path / "data", image_size=32, crop="fov")
    assert layout.is_prepared(tmp_path / "data", 32)


def test_strict_crop_build_refuses_an_image_without_a_field(tmp_path, retina):
    tiny = np.zeros((400, 400, 3), np.uint8)
    tiny[195:203, 195:203] = 220
    source = _write_source(tmp_path / "source", {"retina.jpg": retina[::4, ::4],
                                                 "tiny.jpg": tiny})
    with pytest.raises(DataError, match=r"tiny\.jpg: field of view covers .* too small"):
        build_dataset(source, tmp_path / "data", image_size=32, strict=True, crop="fov")
    assert not (tmp_path / "data" / layout.DATASET_NAME).exists()


def test_unknown_crop_mode_is_refused(tmp_path, retina):
    source = _write_source(tmp_path / "source", {"retina.jpg": retina[::4, ::4]})
    with pytest.raises(DataError, match="crop 'disc' is not one of: none, fov"):
        build_dataset(source, tmp_path / "data", image_size=32, crop="disc")


def test_fingerprint_of_a_plain_build_is_unchanged_and_the_crop_changes_it(tmp_path, retina):
    source = _write_source(tmp_path / "source", {"retina.jpg": retina[::8, ::8]})
    plain = top_source.source_fingerprint(source, "1.0.0", "32px")
    assert top_source.source_fingerprint(source, "1.0.0", "32px", crop="none") == plain
    assert top_source.source_fingerprint(source, "1.0.0", "32px", crop="fov") != plain
