"""Synthetic anomalies on real-like photographs: exact masks inside the field, determinism."""

import numpy as np
import pandas as pd
import pytest
from skimage import data

from jaxfundus.data.images import letterbox, load_rgb
from jaxfundus.data.labels import DISEASES
from jaxfundus.synthetic.anomalies import (
    STAMPS,
    STRUCTURE_TOLERANCE,
    UNSTAMPED,
    Retina,
    field_of_view,
    paint_anomaly,
    paint_lesions,
    paint_structure,
    paint_texture,
    perlin_mask,
    perlin_noise,
)
from jaxfundus.synthetic.cohort import ImageSpec
from jaxfundus.synthetic.generator import RenderConfig, render_image


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    """scikit-image's colour fundus photograph (1411 px, round field on black) at 96 px."""
    return letterbox(data.retina(), 96)


@pytest.fixture(scope="module")
def optos(tiny_data) -> np.ndarray:
    """A normal Optos-style image written by the generator (128x96), letterboxed to 64 px."""
    index = pd.read_csv(tiny_data.source_dir / "data.csv")
    normal = index[index[list(DISEASES)].sum(axis=1) == 0].iloc[0]
    return letterbox(load_rgb(tiny_data.source_dir / "img" / normal["filename"]), 64)


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    """A normal colour-fundus-style picture (160x120 drawn) letterboxed to a 72 px square."""
    spec = ImageSpec(0, "000000_00.jpg", "00000", 0, "L", 60, "F", ())
    rgb, _ = render_image(spec, RenderConfig(seed=1, style="colour", width=160, height=120,
                                             severity=1.0))
    return letterbox(rgb, 72)


PHOTOS = ["retina", "optos", "colour"]


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before.astype(int) != after.astype(int), axis=-1)


def check_exact_mask_in_field(image: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    assert mask.any()
    np.testing.assert_array_equal(changed(image, out), mask)
    assert not (mask & ~field_of_view(image)).any()


@pytest.mark.parametrize("disease", list(STAMPS))
@pytest.mark.parametrize("photo", PHOTOS)
def test_stamp_changes_exactly_its_mask_inside_the_field(disease, photo, request):
    image = request.getfixturevalue(photo)
    for seed in range(3):
        out, mask = paint_lesions(image, np.random.default_rng(seed), disease)
        check_exact_mask_in_field(image, out, mask)
        # Lesions are local: none covers the whole field.
        assert mask.sum() < 0.8 * field_of_view(image).sum()


@pytest.mark.parametrize("photo", PHOTOS)
def test_texture_changes_exactly_its_mask_inside_the_field(photo, request):
    image = request.getfixturevalue(photo)
    other = np.ascontiguousarray(image[::-1])
    for seed in range(8):
        out, mask = paint_texture(image, np.random.default_rng(seed),
                                  source=other if seed % 2 else None)
        check_exact_mask_in_field(image, out, mask)


@pytest.mark.parametrize("photo", PHOTOS)
def test_structure_change_changes_exactly_its_mask_inside_the_field(photo, request):
    image = request.getfixturevalue(photo)
    drawn = 0
    for seed in range(12):
        out, mask = paint_structure(image, np.random.default_rng(seed))
        if mask.any():  # a warp of a flat region may change nothing visibly
            check_exact_mask_in_field(image, out, mask)
            drawn += 1
            # Every changed pixel moved by at least the tolerance; the change is local.
            moved = np.abs(out.astype(int) - image).max(-1)
            assert moved[mask].min() >= STRUCTURE_TOLERANCE
            assert mask.sum() < 0.5 * field_of_view(image).sum()
        else:
            np.testing.assert_array_equal(out, image)
    assert drawn >= 9


def test_salient_point_is_the_optic_disc():
    # The generator's glaucoma eye marks its cup (inside the disc) in the lesion mask; the
    # brightest smoothed spot must fall on it, in both styles.
    for index, style in enumerate(["colour", "optos"] * 3):
        spec = ImageSpec(index, f"00000{index}_00.jpg", "00000", index, "L", 60, "F", ("Gla",))
        rgb, lesions = render_image(spec, RenderConfig(seed=index, style=style, width=160,
                                                       height=120, severity=1.0))
        x, y = Retina(rgb, np.random.default_rng(0)).salient().astype(int)
        near = lesions[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        assert near.any(), (style, index, (x, y))


def test_structure_probability_draws_structure_changes(retina):
    # p_structure=1 is exactly paint_structure from the same stream after the kind draw.
    rng = np.random.default_rng(5)
    rng.random()
    expected = paint_structure(retina, rng)
    out, mask = paint_anomaly(retina, np.random.default_rng(5), diseases=("DR",), p_texture=0,
                              p_structure=1)
    np.testing.assert_array_equal(out, expected[0])
    np.testing.assert_array_equal(mask, expected[1])
    with pytest.raises(ValueError, match="at most 1"):
        paint_anomaly(retina, np.random.default_rng(0), p_texture=0.6, p_structure=0.6)


def test_letterbox_bars_stay_black(optos):
    bars = optos.max(-1) == 0
    assert bars.any()  # the 4:3 picture leaves black bars in the square
    for seed in range(20):
        out, _ = paint_anomaly(optos, np.random.default_rng(seed), p_texture=0.3,
                               p_structure=0.3)
        assert (out[bars] == 0).all()


def test_same_seed_same_anomaly_and_different_seeds_differ(retina):
    first = paint_anomaly(retina, np.random.default_rng(7))
    again = paint_anomaly(retina, np.random.default_rng(7))
    other = paint_anomaly(retina, np.random.default_rng(8))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_input_is_not_modified(retina):
    before = retina.copy()
    for seed in range(10):
        paint_anomaly(retina, np.random.default_rng(seed))
    np.testing.assert_array_equal(retina, before)


@pytest.mark.parametrize("size", [32, 50, 200])
def test_any_size(size):
    image = letterbox(data.retina(), size)
    for seed, disease in enumerate(STAMPS):
        out, mask = paint_anomaly(image, np.random.default_rng(seed), diseases=(disease,),
                                  p_texture=0.3)
        check_exact_mask_in_field(image, out, mask)


def test_texture_probability_and_disease_choice(retina):
    # p_texture=1, or no diseases, draws exactly what paint_texture draws from the same stream.
    texture = paint_texture(retina, np.random.default_rng(3))[0]
    np.testing.assert_array_equal(paint_anomaly(retina, np.random.default_rng(3), diseases=())[0],
                                  texture)
    # p_texture=0 with one disease is that disease's stamp: a macular hole is one compact spot.
    out, mask = paint_anomaly(retina, np.random.default_rng(3), diseases=("MH",), p_texture=0)
    ys, xs = np.nonzero(mask)
    assert np.ptp(xs) < 0.5 * retina.shape[1] and np.ptp(ys) < 0.5 * retina.shape[0]


def test_every_disease_has_a_stamp_or_a_reason():
    assert set(STAMPS) | set(UNSTAMPED) == set(DISEASES)
    assert not set(STAMPS) & set(UNSTAMPED)


@pytest.mark.parametrize(("diseases", "message"), [(("Gla",), "no lesion stamp"),
                                                   (("DR", "XYZ"), "unknown disease 'XYZ'")])
def test_bad_disease_names_are_refused(retina, diseases, message):
    with pytest.raises(ValueError, match=message):
        paint_anomaly(retina, np.random.default_rng(0), diseases=diseases)


def test_bad_inputs_are_refused(retina):
    with pytest.raises(ValueError, match="uint8"):
        paint_anomaly(retina.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="p_texture"):
        paint_anomaly(retina, np.random.default_rng(0), p_texture=1.5)
    with pytest.raises(ValueError, match="texture source shape"):
        paint_texture(retina, np.random.default_rng(0), source=retina[:50])


def test_field_of_view_excludes_bars_and_fills_dark_lesions():
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 8:56] = (180, 90, 40)  # a letterboxed 3:2 picture
    image[30:34, 30:34] = 0  # a black spot inside the field (dark lesion, dust)
    image[2, 2] = 255  # a speck of noise in the bar
    fov = field_of_view(image)
    expected = np.zeros((64, 64), bool)
    expected[16:48, 8:56] = True
    np.testing.assert_array_equal(fov, expected)
    # A failed, all-black capture does not stop training: everything counts as field.
    assert field_of_view(np.zeros((32, 32, 3), np.uint8)).all()


def test_perlin_noise_range_and_mask_inside_field():
    rng = np.random.default_rng(0)
    noise = perlin_noise(rng, 48, 64, (4, 8))
    assert noise.shape == (48, 64) and noise.dtype == np.float32
    assert np.abs(noise).max() <= 1.0 + 1e-5
    assert noise.std() > 0.1
    fov = np.zeros((64, 64), bool)
    fov[10:50, 5:60] = True
    for seed in range(10):
        mask = perlin_mask(np.random.default_rng(seed), fov)
        assert mask.sum() >= 4 and not (mask & ~fov).any()
