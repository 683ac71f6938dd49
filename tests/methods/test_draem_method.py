"""The DRAEM method's pieces that need no training: its synthetic-anomaly transform (what the
pipeline runs per training image) and which lesions it trains on."""

import pickle

import numpy as np
import pytest
from PIL import Image

from jaxfundus.config import ConfigError, load_task, resolve_config
from jaxfundus.data.images import letterbox
from jaxfundus.methods import make_method
from jaxfundus.methods.draem import SyntheticAnomalies
from jaxfundus.synthetic.anomalies import changed_pixels, field_of_view


@pytest.fixture(scope="module")
def photo(tiny_data) -> np.ndarray:
    """A normal photograph of the tiny dataset, letterboxed as the pipeline gives it."""
    import pandas as pd

    from jaxfundus.data.labels import DISEASES

    index = pd.read_csv(tiny_data.source_dir / "data.csv")
    name = index[index[list(DISEASES)].sum(axis=1) == 0]["filename"].iloc[0]
    return letterbox(np.asarray(Image.open(tiny_data.source_dir / "img" / name).convert("RGB")),
                     64)


def test_transform_paints_one_anomaly_with_its_exact_mask(photo):
    transform = SyntheticAnomalies(("DR", "RD"), anomaly_probability=1.0, texture_probability=0.5)
    for seed in range(6):
        out = transform(photo, np.random.default_rng(seed))
        assert out["anomaly_image"].dtype == np.uint8 and out["anomaly_mask"].dtype == bool
        assert out["anomaly_mask"].any()
        assert np.array_equal(out["anomaly_mask"], changed_pixels(photo, out["anomaly_image"]))
        assert not (out["anomaly_mask"] & ~field_of_view(photo)).any()


def test_transform_is_seeded_and_survives_pickling(photo):
    transform = SyntheticAnomalies(("DM",), anomaly_probability=0.5, texture_probability=0.0)
    copy = pickle.loads(pickle.dumps(transform))  # Grain worker processes get a pickled copy
    assert copy == transform
    for seed in range(4):
        a = transform(photo, np.random.default_rng([0, 1, seed]))
        b = copy(photo, np.random.default_rng([0, 1, seed]))
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_anomaly_probability_decides_how_many_images_get_one(photo):
    never = SyntheticAnomalies(("DR",), anomaly_probability=0.0, texture_probability=0.5)
    out = never(photo, np.random.default_rng(0))
    assert np.array_equal(out["anomaly_image"], photo) and not out["anomaly_mask"].any()
    half = SyntheticAnomalies(("DR",), anomaly_probability=0.5, texture_probability=0.5)
    painted = [half(photo, np.random.default_rng(s))["anomaly_mask"].any() for s in range(40)]
    assert 10 <= sum(painted) <= 30


def test_draem_trains_on_every_stamp_but_the_heldout_diseases():
    spec = load_task("draem")
    method = make_method(spec, resolve_config("draem", "draem", "smoke"))
    assert method.lesion_diseases == ("DR", "RD", "RP", "DM")
    assert method.example_transform == SyntheticAnomalies(("DR", "RD", "RP", "DM"), 0.5, 0.5)
    everything = make_method(spec, resolve_config("draem", "draem", "smoke",
                                                  heldout_diseases="none"))
    assert everything.lesion_diseases == ("AMD", "RVO", "MH", "DR", "RD", "RP", "AO", "DM")


def test_image_sizes_and_scores_it_cannot_use_are_refused():
    spec = load_task("draem")
    with pytest.raises(ConfigError, match="image_size = 48: DRAEM image_size must be a power"):
        make_method(spec, resolve_config("draem", "draem", "smoke", image_size=48))
    with pytest.raises(ConfigError, match="image_score = 'latent': draem scores images with "
                                          "mean, max, top-k"):
        make_method(spec, resolve_config("draem", "draem", "smoke", image_score="latent"))
