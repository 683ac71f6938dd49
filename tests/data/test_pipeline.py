import numpy as np
import pytest

from jaxfundus.data.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_batches,
    normalize,
    train_batches,
)


def _source(n=40, size=48):
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)} for _ in range(n)]


def test_train_batches_are_resized_uint8_with_example_ids():
    source = _source()
    weights = np.linspace(0.5, 2.0, 40).astype(np.float32)
    it = train_batches(source, np.arange(40), np.arange(40) % 3, image_size=32, global_batch=8,
                       epochs=2, seed=0, weights=weights)
    batch = next(it)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["target"].shape == (8,) and batch["mask"].all()
    assert np.array_equal(batch["weight"], weights[batch["row"]])
    raw = np.asarray(source[batch["row"][0]]["image"], np.float32)
    # resized with the area filter: the channel means survive
    assert np.allclose(batch["image"][0].mean((0, 1)), raw.mean((0, 1)), atol=3)
    # (epoch, position in the epoch's global order) seeds each example's device augmentation
    assert batch["example_id"].tolist() == [[0, i] for i in range(8)]
    rest = list(it)
    assert len(rest) == 9  # 40 // 8 batches per epoch, 2 epochs, one already taken
    assert rest[4]["example_id"].tolist() == [[1, i] for i in range(8)]


def test_imagenet_normalisation_on_numpy_and_jax_arrays_agree():
    import jax.numpy as jnp

    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    on_host = normalize(images, "imagenet")
    assert np.allclose(on_host * IMAGENET_STD + IMAGENET_MEAN, images / 255.0, atol=1e-6)
    assert np.allclose(np.asarray(normalize(jnp.asarray(images), "imagenet")), on_host,
                       atol=1e-6)


def test_tanh_normalisation_range():
    x = normalize(np.array([[[0, 128, 255]]], np.uint8), "tanh")
    assert np.allclose(x, [[[-1.0, 128 / 127.5 - 1, 1.0]]], atol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        normalize(np.zeros((1, 1, 3), np.uint8), "zscore")


def test_each_epoch_is_a_new_permutation_of_every_row():
    it = train_batches(_source(), np.arange(40), np.zeros(40), image_size=16, global_batch=8,
                       epochs=2, seed=5)
    rows = np.concatenate([b["row"] for b in it]).reshape(2, 40)
    assert sorted(rows[0]) == list(range(40)) and sorted(rows[1]) == list(range(40))
    assert not np.array_equal(rows[0], rows[1])


def test_restored_iterator_state_continues_exactly():
    def make():
        return train_batches(_source(), np.arange(40), np.zeros(40), image_size=16,
                             global_batch=8, epochs=2, seed=1)

    full = [b["image"] for b in make()]
    it = make()
    for _ in range(3):
        next(it)
    state = it.get_state()
    resumed = make()
    resumed.set_state(state)
    rest = [b["image"] for b in resumed]
    assert len(rest) == len(full) - 3
    assert all(np.array_equal(a, b) for a, b in zip(full[3:], rest, strict=True))


def test_processes_get_disjoint_halves_of_each_global_batch():
    def rows(process_index):
        it = train_batches(_source(), np.arange(40), np.zeros(40), image_size=16,
                           global_batch=8, epochs=1, seed=2, process_index=process_index,
                           process_count=2)
        return [b["row"] for b in it]

    single = [b["row"] for b in train_batches(_source(), np.arange(40), np.zeros(40),
                                              image_size=16, global_batch=8, epochs=1, seed=2)]
    for whole, a, b in zip(single, rows(0), rows(1), strict=True):
        assert np.array_equal(whole, np.concatenate([a, b]))


def test_eval_batches_cover_every_row_once_with_padding_masked():
    batches = list(eval_batches(_source(), np.arange(20), np.arange(20), image_size=16,
                                global_batch=8))
    rows = np.concatenate([b["row"][b["mask"]] for b in batches])
    assert rows.tolist() == list(range(20))
    assert sum((~b["mask"]).sum() for b in batches) == 4


@pytest.mark.slow  # starts Grain worker processes
def test_worker_processes_give_identical_batches():
    kwargs = dict(image_size=16, global_batch=8, epochs=1, seed=3)
    inline = [b["image"] for b in train_batches(_source(), np.arange(40), np.zeros(40), **kwargs)]
    workers = [b["image"] for b in train_batches(_source(), np.arange(40), np.zeros(40),
                                                 workers=2, **kwargs)]
    assert all(np.array_equal(a, b) for a, b in zip(inline, workers, strict=True))


def _mark_corner(image, rng):
    """A host transform: a copy of the image with a random-valued corner, and its mask."""
    marked = image.copy()
    marked[:2, :2] = rng.integers(0, 256)
    mask = np.zeros(image.shape[:2], bool)
    mask[:2, :2] = True
    return {"anomaly_image": marked, "anomaly_mask": mask}


def test_a_host_transform_adds_fields_seeded_by_position():
    def batches(seed):
        return list(train_batches(_source(), np.arange(40), np.zeros(40), image_size=16,
                                  global_batch=8, epochs=2, seed=seed, transform=_mark_corner))

    first, again, other = batches(0), batches(0), batches(1)
    batch = first[0]
    assert batch["anomaly_image"].shape == (8, 16, 16, 3) and batch["anomaly_mask"].shape == (
        8, 16, 16)
    assert np.array_equal(batch["anomaly_image"][:, 2:], batch["image"][:, 2:])
    assert all(np.array_equal(a["anomaly_image"], b["anomaly_image"])
               for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a["anomaly_image"], b["anomaly_image"])
                   for a, b in zip(first, other, strict=True))
    # eval batches never get it
    assert "anomaly_image" not in next(iter(eval_batches(_source(), np.arange(8), np.zeros(8),
                                                         image_size=16, global_batch=8)))
