"""`--init`: a classifier's backbone from a project weights file, checked before training; the
frozen warm-up; the `paper` preset's ImageNet start when the weights are cached.

Weights files here hold random arrays in ResNet-50's shapes (written with save_backbone, no
TensorFlow) or, in the end-to-end test, a converted random-weight Keras ResNet50 (as
tests/models/test_keras_weights.py builds them). ResNet-50 compiles slowly on CPU, so tests
that compile it are marked slow.
"""

from __future__ import annotations

import json
import types

import h5py
import jax
import numpy as np
import pytest
from flax import nnx

from jaxfundus import commands, runs
from jaxfundus.compile_cache import enable_compilation_cache
from jaxfundus.config import ConfigError, load_task, resolve_config
from jaxfundus.data.datasets import open_dataset
from jaxfundus.data.pipeline import steps_per_epoch, train_batches
from jaxfundus.experiment import plan_folds
from jaxfundus.methods import make_method
from jaxfundus.models.initialization import init_provenance
from jaxfundus.models.pretrained import (
    HEAD,
    WeightsError,
    backbone_variables,
    file_sha256,
    read_backbone,
    save_backbone,
    weights_file,
)
from jaxfundus.models.registry import build_classifier
from jaxfundus.predict import Predictor
from jaxfundus.train.loop import Trainer
from jaxfundus.train.mesh import DataParallel

MODEL = "resnet50"


def _random_backbone(model_name: str, seed: int) -> dict[str, np.ndarray]:
    """Random float32 arrays for every backbone variable of `model_name`, BatchNorm statistics
    far from their fresh values (mean 0, var 1), so a load that skips them shows."""
    model = nnx.eval_shape(lambda: build_classifier(model_name, 1, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, variable in backbone_variables(model).items():
        shape, f32 = variable.shape, np.float32  # drawn in float32: ResNet-50 is 23M values
        if key.endswith("/var"):
            arrays[key] = 0.5 + rng.random(shape, f32)
        elif key.endswith("/scale"):
            arrays[key] = 0.5 + 0.5 * rng.random(shape, f32)
        else:
            scale = 0.05 if key.endswith("/kernel") else 0.2
            arrays[key] = f32(scale) * rng.standard_normal(shape, f32)
    return arrays


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A project weights file of random ResNet-50 arrays (read-only: copy before changing)."""
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.safetensors"
    return save_backbone(_random_backbone(MODEL, seed=1), path, model_name=MODEL,
                         source="random test weights")


def _one_line(call, error=WeightsError) -> str:
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


def _train(tiny_data, workdir, **overrides):
    lines = []
    summaries = commands.train(task="binary", model=MODEL, preset="smoke",
                               data_dir=str(tiny_data.data_dir), workdir=str(workdir),
                               log=lines.append, **overrides)
    return summaries, lines


def _leaves(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _backbone_of(method, state) -> dict[str, np.ndarray]:
    return {key: np.asarray(variable.get_value())
            for key, variable in backbone_variables(method.model(state, train=True)).items()}


# -- before training ---------------------------------------------------------------------------


def _untouched_data(tmp_path) -> types.SimpleNamespace:
    """In place of tiny_data: a data folder that does not exist, so a check that must come
    before any data is opened fails first (and the folder is never created)."""
    return types.SimpleNamespace(data_dir=tmp_path / "no-data")


@pytest.mark.slow  # writes and reads three ResNet-50-sized weights files
def test_mismatched_weights_file_fails_before_training_with_one_line(tmp_path, backbone_file):
    tiny_data = _untouched_data(tmp_path)
    arrays, _ = read_backbone(backbone_file)
    key = "blocks/3/spatial/conv/kernel"
    original = arrays[key]
    arrays[key] = original[..., :-1]  # one layer one filter short
    wrong = save_backbone(arrays, tmp_path / "wrong.safetensors", model_name=MODEL,
                          source="test")
    message = _one_line(lambda: _train(tiny_data, tmp_path / "runs", init=str(wrong)))
    assert str(wrong) in message and key in message and "expected shape" in message
    arrays[key] = original
    del arrays["stem/conv/kernel"]
    save_backbone(arrays, wrong, model_name=MODEL, source="test")
    message = _one_line(lambda: _train(tiny_data, tmp_path / "runs", init=str(wrong)))
    assert "stem/conv/kernel is missing" in message
    # Nothing was prepared or trained.
    assert not (tmp_path / "runs").exists() and not tiny_data.data_dir.exists()


def test_missing_or_foreign_weights_file_fails_before_training(tmp_path, backbone_file):
    tiny_data = _untouched_data(tmp_path)
    absent = tmp_path / "absent.safetensors"
    message = _one_line(lambda: _train(tiny_data, tmp_path / "runs", init=str(absent)))
    assert str(absent) in message and "invoke weights" in message
    # imagenet = the cache's file, absent in this test's cache.
    message = _one_line(lambda: _train(tiny_data, tmp_path / "runs", init="imagenet"))
    assert str(weights_file(MODEL)) in message and "invoke weights --model=resnet50" in message
    message = _one_line(lambda: commands.train(
        task="binary", model="inception-v3", preset="smoke", init=str(backbone_file),
        data_dir=str(tiny_data.data_dir), workdir=str(tmp_path / "runs"), log=lambda _: None))
    assert "holds weights for 'resnet50', not 'inception-v3'" in message
    message = _one_line(lambda: commands.train(
        task="binary", model="simple-cnn", preset="smoke", init="imagenet",
        data_dir=str(tiny_data.data_dir), workdir=str(tmp_path / "runs"), log=lambda _: None))
    assert "no ImageNet weights for 'simple-cnn'" in message
    assert not (tmp_path / "runs").exists() and not tiny_data.data_dir.exists()


def test_fine_tuning_settings_are_checked():
    assert resolve_config("binary", MODEL, "smoke", init="scratch").init is None
    with pytest.raises(ConfigError, match="freeze_epochs = 2 leaves no epoch"):
        resolve_config("binary", MODEL, "smoke", init="imagenet", freeze_epochs=2)
    with pytest.raises(ConfigError, match="backbone_lr_scale = 0.0"):
        resolve_config("binary", MODEL, "smoke", backbone_lr_scale=0.0)
    with pytest.raises(ConfigError, match="freeze_epochs = -1"):
        resolve_config("binary", MODEL, "smoke", freeze_epochs=-1)


def test_paper_preset_starts_from_imagenet_only_when_the_cache_has_the_file(
        tmp_path, monkeypatch, backbone_file):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    configs = [resolve_config("binary", m, "paper") for m in ("resnet50", "simple-cnn")]
    assert all(config.init == "imagenet-if-cached" for config in configs)
    resolved, notes = commands.start_points(configs)
    assert [config.init for config in resolved] == [None, None]
    assert f"no ImageNet weights in {weights_file(MODEL)}" in notes[0]
    assert "invoke weights --model=resnet50" in notes[0] and "from scratch" in notes[0]
    assert notes[1].startswith("simple-cnn: trains from scratch")

    weights_file(MODEL).parent.mkdir(parents=True)
    weights_file(MODEL).write_bytes(backbone_file.read_bytes())
    resolved, notes = commands.start_points(configs)
    assert [config.init for config in resolved] == ["imagenet", None]
    assert notes[0] == f"resnet50: starts from the ImageNet weights in {weights_file(MODEL)}"
    # The preset's warm-up and learning-rate ratio are what a pretrained run gets.
    assert (resolved[0].freeze_epochs, resolved[0].backbone_lr_scale) == (1, 0.1)


@pytest.mark.slow  # builds ResNet-50 and Inception-v3 methods
def test_normalisation_follows_the_initialisation(backbone_file):
    spec = load_task("three-class")

    def method(model, init):
        return make_method(spec, resolve_config("three-class", model, "smoke", init=init))

    assert method(MODEL, None).normalization == "imagenet"
    assert method(MODEL, str(backbone_file)).normalization == "caffe"
    assert method("inception-v3", "imagenet").normalization == "tanh"


def test_provenance_names_the_file_its_hash_and_source(backbone_file):
    assert init_provenance(MODEL, None) == {"init": "scratch"}
    record = init_provenance(MODEL, str(backbone_file))
    assert record == {"init": str(backbone_file), "weights_file": backbone_file.name,
                      "weights_path": str(backbone_file),
                      "weights_sha256": file_sha256(backbone_file),
                      "weights_source": "random test weights"}


# -- the start and the warm-up (compile ResNet-50) ---------------------------------------------


def _fold(tiny_data, **overrides):
    """A trainer of this file's end-to-end training (binary, smoke, all of `overrides`), with
    the persistent compilation cache on as `commands.train` has it: both compile the same
    ResNet-50 programs, and whichever test runs second loads them instead."""
    enable_compilation_cache()
    config = resolve_config("binary", MODEL, "smoke", data_dir=str(tiny_data.data_dir),
                            **overrides)
    dataset = open_dataset(config.data_dir, config.image_size, log=lambda _: None)
    [fold] = plan_folds(load_task("binary"), config, dataset)
    n_steps = steps_per_epoch(int((fold.split == "train").sum()), config.batch_size)
    trainer = Trainer(make_method(load_task("binary"), config, n_steps), config, DataParallel())
    return trainer, fold, n_steps


@pytest.mark.slow
def test_start_state_has_the_files_backbone_and_the_frozen_warm_up_keeps_it(tiny_data,
                                                                           backbone_file):
    """One trainer (ResNet-50 builds and compiles slowly) for the start and the warm-up."""
    trainer, fold, n_steps = _fold(tiny_data, init=str(backbone_file), freeze_epochs=1)
    fresh, state = trainer.init_state(), trainer.start_state()
    arrays, _ = read_backbone(backbone_file)
    start_backbone, start_head = _backbone_of(trainer.method, state), _leaves(state.params[HEAD])
    assert start_backbone.keys() == arrays.keys()
    # Every Param and BatchNorm statistic is the file's, bit for bit.
    assert all(np.array_equal(start_backbone[key], arrays[key]) for key in arrays)
    assert any(key.endswith("/norm/var") for key in arrays)
    # The head is the fresh initialisation of this seed, sized for the task's two classes.
    assert start_head.keys() == _leaves(fresh.params[HEAD]).keys()
    assert all(np.array_equal(a, b) for a, b in zip(start_head.values(),
                                                   _leaves(fresh.params[HEAD]).values(),
                                                   strict=True))
    assert state.params[HEAD]["kernel"].shape == (2048, 2)
    # Placed like the state the jitted step expects.
    assert all(leaf.sharding == trainer.parallel.replicated for leaf in jax.tree.leaves(state))

    method, parallel, config = trainer.method, trainer.parallel, trainer.config
    train = fold.data("train")
    batches = train_batches(train.source, train.indices, train.targets,
                            image_size=config.image_size, global_batch=config.batch_size,
                            epochs=config.epochs, seed=config.seed,
                            weights=method.example_weights(train.targets))
    for _ in range(n_steps):  # the frozen epoch
        batch = next(batches)
        state, _ = trainer.train_step(state, parallel.put_batch(
            {k: v for k, v in batch.items() if k != "row"}))
    assert int(state.step) == n_steps
    frozen_backbone = _backbone_of(method, state)
    assert all(np.array_equal(frozen_backbone[k], start_backbone[k]) for k in start_backbone)
    head = _leaves(state.params[HEAD])
    assert any(not np.array_equal(head[k], start_head[k]) for k in head)  # the head learned

    # The second epoch fine-tunes everything: BatchNorm statistics from its first step, the
    # Params from its second (the backbone's learning-rate warm-up starts at zero).
    for _ in range(2):
        batch = next(batches)
        state, _ = trainer.train_step(state, parallel.put_batch(
            {k: v for k, v in batch.items() if k != "row"}))
    tuned = _backbone_of(method, state)
    changed = {key for key in tuned if not np.array_equal(tuned[key], start_backbone[key])}
    assert "stem/conv/kernel" in changed and "stem/norm/mean" in changed  # params and stats


# -- end to end: a converted Keras file ----------------------------------------------------------


def _keras_resnet50_file(directory):
    """A random-weight Keras ResNet50 (BatchNorm statistics and conv biases randomised) in
    the legacy .h5 layout that keras.applications downloads."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                        input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    draws = {"bias": lambda s: rng.normal(0, 0.1, s),
             "moving_mean": lambda s: rng.normal(0, 0.1, s),
             "moving_variance": lambda s: rng.uniform(0.5, 1.5, s)}
    for layer in model.layers:
        for variable in layer.weights:
            if variable.name in draws:
                variable.assign(draws[variable.name](variable.shape).astype(np.float32))
    path = directory / "resnet50_notop.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return path


@pytest.mark.slow
def test_imagenet_init_trains_evaluates_predicts_and_resumes_without_the_file(
        tiny_data, tmp_path, monkeypatch, backbone_file):
    from jaxfundus.weights import convert_weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    keras_file = _keras_resnet50_file(tmp_path)
    converted = convert_weights(MODEL, keras_file, log=lambda _: None)
    assert converted == weights_file(MODEL)

    [summary], lines = _train(tiny_data, tmp_path / "runs", init="imagenet", freeze_epochs=1)
    assert summary["folds_done"] == 1
    assert any("init imagenet (backbone lr x0.1, frozen for 1 epoch(s))" in line
               for line in lines)
    run = runs.fold_directory(tmp_path / "runs", "binary", MODEL, 0)
    config = json.loads((run / runs.CONFIG).read_text())
    assert (config["init"], config["freeze_epochs"]) == ("imagenet", 1)
    predictions = (run / runs.PREDICTIONS).read_text()

    # Evaluation and prediction restore the checkpoint and normalise as training did; the
    # weights file is not needed.
    converted.unlink()
    commands.evaluate(task="binary", model=MODEL, workdir=str(tmp_path / "runs"),
                      log=lambda _: None)
    assert (run / runs.PREDICTIONS).read_text() == predictions
    predictor = Predictor(tmp_path / "runs", "binary", MODEL)
    assert predictor.method.normalization == "caffe"
    image = next((tiny_data.source_dir / "img").iterdir())
    assert np.isclose(sum(predictor.predict(image).probabilities.values()), 1.0)

    # A resumed run continues from its checkpoint, not from the (now different) weights file.
    converted.write_bytes(backbone_file.read_bytes())
    (run / runs.METRICS).unlink()
    _, lines = _train(tiny_data, tmp_path / "runs", init="imagenet", freeze_epochs=1)
    assert any("resuming from checkpoint" in line for line in lines)
    assert (run / runs.PREDICTIONS).read_text() == predictions
