"""Keras weights -> our backbones: pooled features equal Keras' own models (both layouts, both
models), mismatched files are one-line errors, loading is all-or-nothing, and the input
normalisation follows the initialisation. Keras models come from tensorflow-cpu (dev extra),
with random weights: nothing is downloaded."""

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
from flax import nnx

from jaxfundus.data.pipeline import normalize
from jaxfundus.models.keras_weights import KERAS_MODELS, convert_keras_weights, normalization_for
from jaxfundus.models.pretrained import (
    WeightsError,
    backbone_variables,
    load_backbone,
    read_backbone,
    save_backbone,
)
from jaxfundus.models.registry import build_classifier
from jaxfundus.weights import (
    KERAS_FILES,
    check_images,
    convert_weights,
    project_pooled_features,
)

# Small inputs keep the tests fast; 75 px is the smallest InceptionV3 Keras accepts.
IMAGE_SIZES = {"resnet50": 64, "inception-v3": 75}
KERAS_APPLICATIONS = {"resnet50": "ResNet50", "inception-v3": "InceptionV3"}
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class KerasFiles:
    legacy: Path  # the layout of the files keras.applications downloads
    keras3: Path  # model.save_weights(...weights.h5)
    features: np.ndarray  # Keras' pooled features of check_images(...), inference mode


def _randomise(model, seed: int) -> None:
    """Random conv biases and BatchNorm parameters and statistics, so that bias folding and
    every BN variable matter (weights=None leaves biases 0, gamma 1, mean 0, var 1). The ranges
    keep the pooled features in the few-units range of real ImageNet features."""
    rng = np.random.default_rng(seed)
    draws = {"bias": lambda s: rng.normal(0, 0.1, s),
             "gamma": lambda s: rng.uniform(0.3, 0.9, s),
             "beta": lambda s: rng.normal(0, 0.5, s),
             "moving_mean": lambda s: rng.normal(0, 0.1, s),
             "moving_variance": lambda s: rng.uniform(0.5, 1.5, s)}
    for layer in model.layers:
        for variable in layer.weights:
            if variable.name in draws:
                variable.assign(draws[variable.name](variable.shape).astype(np.float32))


def _save_keras_files(model_name: str, directory: Path) -> KerasFiles:
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    size = IMAGE_SIZES[model_name]
    keras.utils.set_random_seed(0)  # the kernels' initialisation: same numbers every run
    build = getattr(keras.applications, KERAS_APPLICATIONS[model_name])
    model = build(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    _randomise(model, seed=0)
    legacy = directory / f"{model_name}_notop.h5"
    with h5py.File(legacy, "w") as file:  # what Keras 2's save_weights("x.h5") wrote
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    keras3 = directory / f"{model_name}.weights.h5"
    model.save_weights(keras3)
    images = check_images(model_name, image_size=size)
    return KerasFiles(legacy, keras3, np.asarray(model(images, training=False)))


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """model name -> its KerasFiles, built once per module on first use (TF is slow to load)."""
    built = {}

    def get(model_name: str) -> KerasFiles:
        if model_name not in built:
            built[model_name] = _save_keras_files(model_name, tmp_path_factory.mktemp(model_name))
        return built[model_name]

    return get


def _copy(path: Path, tmp_path: Path) -> Path:
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    return copy


def _one_line_error(call) -> str:
    with pytest.raises(WeightsError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


# Which layout Keras itself reads back in --check, per model: each layout once. The other
# layout is proven to convert to the same arrays, so one full-architecture forward pass per
# model (not per layout) shows both layouts' conversion is exact.
CHECKED_LAYOUT = {"resnet50": "legacy", "inception-v3": "keras3"}


@pytest.mark.slow
@pytest.mark.parametrize("model_name", KERAS_MODELS)
def test_both_layouts_convert_to_pooled_features_equal_keras(keras_files, model_name, tmp_path):
    files = keras_files(model_name)
    checked = CHECKED_LAYOUT[model_name]
    other = "keras3" if checked == "legacy" else "legacy"
    lines = []
    path = convert_weights(model_name, getattr(files, checked), check=True,
                           out=tmp_path / "w.safetensors",
                           check_image_size=IMAGE_SIZES[model_name], log=lines.append)
    # --check: Keras reads the same file itself; the last line is the largest difference.
    max_abs_diff = re.fullmatch(r"max_abs_diff=(\S+)", lines[-1])
    assert max_abs_diff and float(max_abs_diff.group(1)) < TOLERANCE
    images = check_images(model_name, image_size=IMAGE_SIZES[model_name])
    ours = project_pooled_features(model_name, path, images)
    diff = np.abs(ours - files.features).max()
    print(f"{model_name} {checked}: max_abs_diff={diff:.3g}, "
          f"max |feature|={np.abs(files.features).max():.3g}")
    assert np.abs(files.features).max() > 1  # real features, not a degenerate all-zero map
    assert diff < TOLERANCE
    # The other layout of the same Keras model: the same arrays, so the same features.
    arrays, _ = read_backbone(path)
    converted = convert_keras_weights(model_name, getattr(files, other))
    assert sorted(converted) == sorted(arrays)
    assert all(np.array_equal(converted[key], arrays[key]) for key in arrays)


def _keras2_names(name: str) -> str:
    """Keras 2's auto-names count from 1: conv2d -> conv2d_1, conv2d_7 -> conv2d_8."""
    match = re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", name)
    return f"{match.group(1)}_{int(match.group(2) or 0) + 1}" if match else name


@pytest.mark.slow
def test_keras2_legacy_naming_converts_the_same(keras_files, tmp_path):
    """The downloaded InceptionV3 file was written by Keras 2: 1-based layer numbers, ':0'
    weight suffixes, its own layer order. Matching is by creation number, so all agree."""
    original = keras_files("inception-v3").legacy
    renamed = tmp_path / "keras2.h5"
    with h5py.File(original, "r") as src, h5py.File(renamed, "w") as dst:
        layers = [name.decode() if isinstance(name, bytes) else name
                  for name in src.attrs["layer_names"]]
        dst.attrs["layer_names"] = [_keras2_names(name).encode() for name in reversed(layers)]
        for name in layers:
            group = dst.create_group(_keras2_names(name))
            weight_names = []
            for weight in src[name].attrs["weight_names"]:
                weight = weight.decode() if isinstance(weight, bytes) else weight
                new = f"{_keras2_names(name)}/{weight.split('/')[-1]}:0"
                group[new] = src[name][weight][()]
                weight_names.append(new.encode())
            group.attrs["weight_names"] = weight_names
    expected = convert_keras_weights("inception-v3", original)
    converted = convert_keras_weights("inception-v3", renamed)
    assert list(converted) == list(expected)
    assert all(np.array_equal(converted[key], expected[key]) for key in expected)


@pytest.mark.slow
def test_resnet_conv_bias_is_folded_into_the_mean(keras_files):
    files = keras_files("resnet50")
    with h5py.File(files.legacy, "r") as file:
        bias = file["conv2_block1_1_conv/conv2_block1_1_conv/bias"][()]
        mean = file["conv2_block1_1_bn/conv2_block1_1_bn/moving_mean"][()]
    converted = convert_keras_weights("resnet50", files.legacy)
    assert np.abs(bias).max() > 0  # the fixture randomised it, so the fold is visible
    np.testing.assert_array_equal(converted["blocks/0/reduce/norm/mean"], mean - bias)


@pytest.mark.slow
def test_file_of_the_other_model_names_the_first_missing_layer(keras_files):
    source = keras_files("inception-v3").legacy
    message = _one_line_error(lambda: convert_keras_weights("resnet50", source))
    assert message.startswith(f"{source}: conv1_conv -> stem/conv/kernel is missing")


@pytest.mark.slow
def test_removed_layer_is_named(keras_files, tmp_path):
    source = _copy(keras_files("resnet50").legacy, tmp_path)
    with h5py.File(source, "r+") as file:
        names = list(file.attrs["layer_names"])
        file.attrs["layer_names"] = [n for n in names if n not in (b"conv3_block2_2_bn",
                                                                   "conv3_block2_2_bn")]
        del file["conv3_block2_2_bn"]
    message = _one_line_error(lambda: convert_keras_weights("resnet50", source))
    # conv3_block2 is the 5th bottleneck block; its BN's first variable in state order: bias.
    assert message == (f"{source}: conv3_block2_2_bn -> blocks/4/spatial/norm/bias is missing "
                       f"(expected shape (128,))")


def _keras3_conv_groups(file: h5py.File) -> list[str]:
    """Keras 3 layout: the conv2d groups in creation order (by their layer name's counter)."""
    def number(key):
        match = re.fullmatch(r"conv2d(?:_(\d+))?", file["layers"][key]["vars"].attrs["name"])
        return int(match.group(1) or 0)

    return sorted((k for k in file["layers"] if k.startswith("conv2d")), key=number)


@pytest.mark.slow
def test_removed_inception_layer_reports_expected_and_found_shapes(keras_files, tmp_path):
    source = _copy(keras_files("inception-v3").keras3, tmp_path)
    with h5py.File(source, "r+") as file:
        groups = _keras3_conv_groups(file)
        # mixed4's 1x7 conv of branch7x7 (the first conv with this kernel shape)
        target = next(g for g in groups
                      if file["layers"][g]["vars"]["0"].shape == (1, 7, 128, 128))
        del file["layers"][target]
    message = _one_line_error(lambda: convert_keras_weights("inception-v3", source))
    assert message.startswith(f"{source}: ")
    assert message.endswith("-> mixed4/branch7x7_2/conv/kernel: expected shape "
                            "(1, 7, 128, 128), found (7, 1, 128, 192)")


@pytest.mark.slow
def test_truncated_inception_file_names_the_missing_module(keras_files, tmp_path):
    source = _copy(keras_files("inception-v3").keras3, tmp_path)
    with h5py.File(source, "r+") as file:
        del file["layers"][_keras3_conv_groups(file)[-1]]
    message = _one_line_error(lambda: convert_keras_weights("inception-v3", source))
    assert message == (f"{source}: conv2d #94 (the file has 93) -> "
                       f"mixed10/branch_pool/conv/kernel is missing (expected shape "
                       f"(1, 1, 2048, 192))")


def test_not_a_keras_file_is_one_line(tmp_path):
    garbage = tmp_path / "weights.h5"
    garbage.write_bytes(b"not hdf5")
    assert str(garbage) in _one_line_error(lambda: convert_keras_weights("resnet50", garbage))
    missing = tmp_path / "absent.h5"
    assert str(missing) in _one_line_error(lambda: convert_keras_weights("resnet50", missing))


@pytest.mark.slow
def test_default_source_is_keras_cached_file(keras_files, tmp_path, monkeypatch):
    """Without --source, the file keras.applications keeps in $KERAS_HOME/models is used."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "models" / KERAS_FILES["resnet50"][0]
    cached.parent.mkdir(parents=True)
    shutil.copyfile(keras_files("resnet50").legacy, cached)
    path = convert_weights("resnet50", out=tmp_path / "w.safetensors", log=lambda _: None)
    arrays, metadata = read_backbone(path)
    assert metadata["model"] == "resnet50"
    assert metadata["source"].startswith(cached.name + " sha256:")
    expected = convert_keras_weights("resnet50", cached)
    assert all(np.array_equal(arrays[key], expected[key]) for key in expected)


_WITHOUT_TENSORFLOW = """
import sys
class NoTensorFlow:  # as if TensorFlow and Keras were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoTensorFlow())
from pathlib import Path
from jaxfundus.weights import convert_weights
convert_weights("resnet50", sys.argv[1], out=Path(sys.argv[2]))
"""


@pytest.mark.slow
def test_conversion_needs_no_tensorflow(keras_files, tmp_path):
    source = keras_files("resnet50").legacy
    out = tmp_path / "w.safetensors"
    subprocess.run([sys.executable, "-c", _WITHOUT_TENSORFLOW, str(source), str(out)],
                   check=True, capture_output=True, timeout=300)
    arrays, _ = read_backbone(out)
    expected = convert_keras_weights("resnet50", source)
    assert all(np.array_equal(arrays[key], expected[key]) for key in expected)


# --- project weights files: strict, all-or-nothing loading (no Keras needed) ---

def _values(model) -> dict[str, np.ndarray]:
    return {key: np.asarray(var.value) for key, var in backbone_variables(model).items()}


@pytest.fixture
def resnet18_file(tmp_path) -> Path:
    donor = build_classifier("resnet18", 3, rngs=nnx.Rngs(1))
    return save_backbone(_values(donor), tmp_path / "resnet18.safetensors", model_name="resnet18",
                         source="test donor")


@pytest.mark.slow  # a ResNet-18 weights file per test
def test_load_backbone_replaces_every_backbone_variable_and_keeps_the_head(resnet18_file):
    model = build_classifier("resnet18", 5, rngs=nnx.Rngs(2))
    head_before = jax.tree.map(np.asarray, nnx.state(model.head))
    load_backbone(model, resnet18_file, model_name="resnet18")
    arrays, _ = read_backbone(resnet18_file)
    assert set(arrays) == set(backbone_variables(model))
    assert all(np.array_equal(value, arrays[key]) for key, value in _values(model).items())
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model.head), head_before)


@pytest.mark.slow  # a ResNet-18 weights file per test
@pytest.mark.parametrize("damage", ["drop", "reshape", "extra"])
def test_load_backbone_refuses_a_partial_or_mismatched_file(resnet18_file, damage):
    arrays, _ = read_backbone(resnet18_file)
    key = "blocks/3/second/conv/kernel"
    shape = arrays[key].shape
    if damage == "drop":
        del arrays[key]
    elif damage == "reshape":
        arrays[key] = arrays[key][..., :8]
    else:
        arrays["blocks/3/third/conv/kernel"] = arrays[key]
    save_backbone(arrays, resnet18_file, model_name="resnet18", source="damaged")
    model = build_classifier("resnet18", 3, rngs=nnx.Rngs(2))
    before = _values(model)
    message = _one_line_error(lambda: load_backbone(model, resnet18_file))
    assert message.startswith(f"{resnet18_file}: ")
    expected = {"drop": f"{key} is missing",
                "reshape": f"{key}: expected shape {shape}, found {(*shape[:3], 8)}",
                "extra": "blocks/3/third/conv/kernel is not a variable"}
    assert expected[damage] in message
    after = _values(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing half-loaded


@pytest.mark.slow  # a ResNet-18 weights file per test
def test_load_backbone_refuses_another_model_or_no_file(resnet18_file, tmp_path):
    model = build_classifier("resnet18", 3, rngs=nnx.Rngs(2))
    assert "not 'resnet50'" in _one_line_error(
        lambda: load_backbone(model, resnet18_file, model_name="resnet50"))
    missing = tmp_path / "absent.safetensors"
    assert str(missing) in _one_line_error(lambda: load_backbone(model, missing))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    assert str(garbage) in _one_line_error(lambda: load_backbone(model, garbage))


# --- the normalisation follows the initialisation ---

def test_normalization_follows_init_and_matches_keras_preprocess_input():
    from keras.applications import inception_v3, resnet50

    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    keras_caffe = resnet50.preprocess_input(images.astype(np.float32))
    keras_tf = inception_v3.preprocess_input(images.astype(np.float32))
    ours_caffe = normalize(images, normalization_for("resnet50", "imagenet"))
    ours_tf = normalize(images, normalization_for("inception-v3", "/some/weights.safetensors"))
    np.testing.assert_allclose(ours_caffe, keras_caffe, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours_tf, keras_tf, rtol=0, atol=1e-6)
    assert normalization_for("resnet50", None) == normalization_for("inception-v3", "scratch") \
        == "imagenet"
    assert "resnet18" in _one_line_error(lambda: normalization_for("resnet18", "imagenet"))
