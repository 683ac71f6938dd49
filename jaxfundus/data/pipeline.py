"""Grain input pipeline over a random-access record source (the TFDS array_record data source).

Records are dicts with `image` uint8[S,S,3] (already letterboxed square by the builder). The
pipeline decodes, resizes to the model's size and batches uint8 images; augmentation and
normalisation run on the device inside the jitted step (jaxfundus.data.augment), so the CPU
workers only decode. Order is a pure function of (seed, epoch, position), and every training
example carries its (epoch, position) as `example_id` to seed its augmentation, so a restored
iterator state continues exactly where a run stopped, with any number of worker processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import cv2
import grain
import numpy as np
from absl import flags

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Keras preprocess_input 'caffe' mode, which Keras' ResNet-50 ImageNet weights expect.
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
NORMALIZATIONS = ("imagenet", "tanh", "caffe")


def normalize(images, normalization: str):
    """uint8 (or 0-255 float) [..., 3] RGB -> float32: ImageNet mean/std ("imagenet"),
    [-1, 1] ("tanh" models, and Keras' 'tf' mode), or Keras' 'caffe' mode (BGR minus the BGR
    mean, 0-255 scale). Works on numpy and jax arrays alike (on the device inside a step)."""
    if normalization == "caffe":
        return images[..., ::-1].astype(np.float32) - CAFFE_BGR_MEAN
    x = images.astype(np.float32) / 255.0
    if normalization == "imagenet":
        return (x - IMAGENET_MEAN) / IMAGENET_STD
    if normalization == "tanh":
        return x * 2.0 - 1.0
    raise ValueError(f"normalization '{normalization}' is not one of {NORMALIZATIONS}")


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square uint8[S,S,3] -> uint8[size,size,3] (area filter when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


class _Example(grain.transforms.Map):
    """Position in the (local) stream -> one prepared example. Picklable for worker processes."""

    def __init__(self, source, indices, targets, *, image_size, order, weights=None,
                 transform=None, seed=0):
        self._source = source
        self._indices = np.asarray(indices)
        self._targets = np.asarray(targets)
        self._weights = None if weights is None else np.asarray(weights, np.float32)
        self._image_size = image_size
        self._order = order
        self._transform = transform
        self._seed = seed

    def map(self, position: int) -> dict[str, np.ndarray]:
        row, key = self._order(position)
        record = self._source[int(self._indices[row])]
        example = {
            "image": resize(np.asarray(record["image"]), self._image_size),
            "target": self._targets[row],
            "row": np.int64(row),
            "mask": np.bool_(key[-1] >= 0),
        }
        if len(key) == 2:  # training: (epoch, position in the epoch) seeds the augmentation
            example["example_id"] = np.asarray(key, np.int32)
            if self._transform is not None:
                rng = np.random.default_rng([self._seed, *key])
                example.update(self._transform(example["image"], rng))
        if self._weights is not None:
            example["weight"] = self._weights[row]
        return example


class _TrainOrder:
    """Local position -> (row, key): a new permutation each epoch, each process its batch slice."""

    def __init__(self, n_rows, steps_per_epoch, global_batch, process_index, process_count, seed):
        self._n_rows = n_rows
        self._steps_per_epoch = steps_per_epoch
        self._global_batch = global_batch
        self._local_batch = global_batch // process_count
        self._process_index = process_index
        self._seed = seed

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs per worker, never unbounded
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self._seed, epoch]).permutation(self._n_rows)

    def __call__(self, position: int) -> tuple[int, tuple[int, int]]:
        step, offset = divmod(position, self._local_batch)
        epoch, step_in_epoch = divmod(step, self._steps_per_epoch)
        global_position = (step_in_epoch * self._global_batch
                           + self._process_index * self._local_batch + offset)
        return int(self._permutation(epoch)[global_position]), (epoch, global_position)


class _EvalOrder:
    """Local position -> (row, key) in dataset order, padded to whole global batches (key -1)."""

    def __init__(self, n_rows, global_batch, process_index, process_count):
        self._n_rows = n_rows
        self._global_batch = global_batch
        self._local_batch = global_batch // process_count
        self._process_index = process_index

    def __call__(self, position: int) -> tuple[int, tuple[int]]:
        step, offset = divmod(position, self._local_batch)
        global_position = (step * self._global_batch
                           + self._process_index * self._local_batch + offset)
        if global_position >= self._n_rows:
            return self._n_rows - 1, (-1,)
        return global_position, (global_position,)


def steps_per_epoch(n_rows: int, global_batch: int) -> int:
    """Whole global batches per epoch (the incomplete last batch is dropped in training)."""
    if n_rows < global_batch:
        raise ValueError(f"{n_rows} training images are fewer than one batch of {global_batch}; "
                         "lower --batch-size")
    return n_rows // global_batch


def train_batches(
    source, indices: Sequence[int], targets: np.ndarray, *, image_size: int, global_batch: int,
    epochs: int, seed: int, weights: np.ndarray | None = None,
    transform: Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]] | None = None,
    workers: int = 0, process_index: int = 0, process_count: int = 1,
) -> grain.DatasetIterator:
    """Checkpointable iterator of this process's training batches for `epochs` epochs.

    Each batch: image uint8[b,S,S,3], target (per-row target array, batched), row int64[b]
    (position in `indices`), mask bool[b] (all True in training), example_id int32[b,2]
    (epoch, position in the epoch's global order) and, when `weights` (one row per image) is
    given, weight (its rows, batched); b = global_batch / processes. A method's `transform`
    (picklable, for worker processes) adds fields per training image from (image, a generator
    seeded by seed, epoch and position), e.g. a synthetic anomaly and its mask.
    """
    _check_batch(global_batch, process_count)
    n_steps = steps_per_epoch(len(indices), global_batch)
    order = _TrainOrder(len(indices), n_steps, global_batch, process_index, process_count, seed)
    example = _Example(source, indices, targets, image_size=image_size, order=order,
                       weights=weights, transform=transform, seed=seed)
    local_batch = global_batch // process_count
    dataset = grain.MapDataset.range(epochs * n_steps * local_batch).map(example)
    return _iterate(dataset.batch(local_batch, drop_remainder=True), workers)


def eval_batches(
    source, indices: Sequence[int], targets: np.ndarray, *, image_size: int, global_batch: int,
    workers: int = 0, process_index: int = 0, process_count: int = 1,
) -> grain.DatasetIterator:
    """Every row once, in order, in whole global batches of uint8 images (as train_batches,
    without example_id); padding rows have mask False."""
    _check_batch(global_batch, process_count)
    n_steps = -(-len(indices) // global_batch)
    order = _EvalOrder(len(indices), global_batch, process_index, process_count)
    example = _Example(source, indices, targets, image_size=image_size, order=order)
    local_batch = global_batch // process_count
    dataset = grain.MapDataset.range(n_steps * local_batch).map(example)
    return _iterate(dataset.batch(local_batch, drop_remainder=True), workers)


def _check_batch(global_batch: int, process_count: int) -> None:
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by {process_count} processes")


def _iterate(dataset: grain.MapDataset, workers: int) -> grain.DatasetIterator:
    iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    if workers > 0:
        # Grain's worker processes read absl flags; outside an absl app nobody parsed them.
        flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(iter_dataset)
