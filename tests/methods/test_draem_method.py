"""The DRAEM method's pieces around the network: its synthetic-anomaly transform (what the
pipeline runs per training image), which lesions it trains on, and the moving average of its
weights that evaluation uses (one real training step)."""

import pickle

import jax
import numpy as np
import pytest
from PIL import Image

from jaxfundus.config import ConfigError, load_task, resolve_config
from jaxfundus.data.images import letterbox
from jaxfundus.methods import make_method
from jaxfundus.methods.draem import SyntheticAnomalies, moving_average
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
    assert method.example_transform == SyntheticAnomalies(("DR", "RD", "RP", "DM"), 0.5, 0.35,
                                                          0.3)
    everything = make_method(spec, resolve_config("draem", "draem", "smoke",
                                                  heldout_diseases="none",
                                                  validation_diseases="none"))
    assert everything.lesion_diseases == ("AMD", "RVO", "MH", "DR", "RD", "RP", "AO", "DM")


def test_image_sizes_and_scores_it_cannot_use_are_refused():
    spec = load_task("draem")
    with pytest.raises(ConfigError, match="image_size = 48: DRAEM image_size must be a power"):
        make_method(spec, resolve_config("draem", "draem", "smoke", image_size=48))
    with pytest.raises(ConfigError, match="image_score = 'latent': draem scores images with "
                                          "mean, max, top-k"):
        make_method(spec, resolve_config("draem", "draem", "smoke", image_score="latent"))


def test_moving_average_is_exactly_the_latest_at_decay_zero():
    rng = np.random.default_rng(0)
    average, latest = rng.normal(size=(2, 50)).astype(np.float32)
    np.testing.assert_array_equal(moving_average(average, latest, 0.0), latest)
    np.testing.assert_allclose(moving_average(average, latest, 0.75),
                               0.75 * average + 0.25 * latest, rtol=1e-6)
    counts = np.arange(3)
    np.testing.assert_array_equal(moving_average(counts + 5, counts, 0.9), counts)


@pytest.mark.slow
def test_evaluation_uses_the_moving_average_of_the_weights(photo):
    decay = 0.9
    config = resolve_config("draem", "draem", "smoke", image_size=32, draem_features=2,
                            draem_ema_decay=decay)
    method = make_method(load_task("draem"), config)
    small = np.ascontiguousarray(photo[::2, ::2])
    painted = SyntheticAnomalies(("DR",), 1.0, 0.5)(small, np.random.default_rng(0))
    images = np.stack([small, painted["anomaly_image"]]).astype(np.float32) / 127.5 - 1
    batch = {"image": images[[0, 0]], "anomaly_image": images,
             "anomaly_mask": np.stack([np.zeros_like(painted["anomaly_mask"]),
                                       painted["anomaly_mask"]])}
    before = method.init_state(0)
    after, _ = jax.jit(method.train_step)(before, batch)
    latest = jax.tree.leaves((after.params, after.rest))
    average = jax.tree.leaves((after.average_params, after.average_rest))
    start = jax.tree.leaves((before.params, before.rest))
    assert any(not np.allclose(a, b) for a, b in zip(latest, start, strict=True))
    for old, new, mean in zip(start, latest, average, strict=True):
        np.testing.assert_allclose(mean, decay * old + (1 - decay) * new, rtol=1e-6, atol=1e-7)
    # The evaluated model is the averaged one, not the latest weights.
    maps = jax.jit(method.anomaly_maps)
    unaveraged = after.replace(average_params=after.params, average_rest=after.rest)
    assert not np.allclose(maps(after, images), maps(unaveraged, images))
