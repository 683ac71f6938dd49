"""Keras ImageNet weights (ResNet-50, InceptionV3) -> our backbones' variables, exactly.

Reads, with h5py alone (no TensorFlow), both layouts Keras writes:

* legacy HDF5: the files ``keras.applications`` downloads to ``~/.keras/models/`` (and any
  ``save_weights_to_hdf5_group``): root attribute ``layer_names``, one group per layer whose
  attribute ``weight_names`` lists datasets ``<layer>/<weight>[:0]``;
* Keras 3 ``.weights.h5`` (``model.save_weights``): ``layers/<class key>/vars/<index>``, the
  layer's own name in the ``name`` attribute of ``vars``.

Layers are matched by name, never by position in the file (Keras' own loader matches legacy
files by topological position, which our module order does not follow). ResNet-50's layers
carry fixed names (``conv2_block1_1_conv``). InceptionV3's ``conv2d_bn`` layers are auto-named
``conv2d[_n]`` / ``batch_normalization[_n]``, numbered in creation order, which is the order of
our ``ConvBN`` modules, so the k-th created pair maps to the k-th module.

Two differences are folded exactly (eval mode):

* Keras' ResNet convolutions have a bias b; ours have none. BN(conv(x) + b) with running mean m
  equals BN(conv(x)) with running mean m - b, so the bias goes into the mean.
* Keras' InceptionV3 BatchNorm has ``scale=False`` (no gamma), as ours: nothing to fold.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
from flax import nnx

from jaxfundus.models.pretrained import WeightsError, backbone_variables, check_backbone
from jaxfundus.models.registry import build_classifier

# Input normalisation (jaxfundus.data.pipeline.normalize) each Keras model's weights expect:
# preprocess_input's 'caffe' mode for ResNet-50, 'tf' mode (x / 127.5 - 1, our "tanh") for
# InceptionV3.
KERAS_NORMALIZATIONS = {"resnet50": "caffe", "inception-v3": "tanh"}
KERAS_MODELS = tuple(KERAS_NORMALIZATIONS)
SCRATCH_NORMALIZATION = "imagenet"  # what training from scratch has always used

# Keras 3 .weights.h5 stores a layer's variables by index, in the order the layer creates them.
_VARIABLE_ORDER = {
    "conv2d": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def normalization_for(model_name: str, init: str | None) -> str:
    """The pipeline normalisation for ``model_name`` started from ``init``.

    ``init`` None or "scratch": the project's default ("imagenet" mean/std). Anything else
    ("imagenet" or a weights file) is a Keras-converted backbone, which expects Keras'
    preprocessing: "caffe" for resnet50, "tanh" (= Keras 'tf' mode) for inception-v3.
    """
    if init in (None, "scratch"):
        return SCRATCH_NORMALIZATION
    if model_name not in KERAS_NORMALIZATIONS:
        raise WeightsError(f"no ImageNet weights for {model_name!r}; pretrained backbones exist "
                           f"for {', '.join(KERAS_MODELS)}")
    return KERAS_NORMALIZATIONS[model_name]


def read_keras_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every layer with weights in a Keras weights file: layer name -> {weight name: array}.

    Weight names are Keras' ("kernel", "bias", "gamma", "beta", "moving_mean",
    "moving_variance"). Raises WeightsError for a missing or unrecognised file.
    """
    if not Path(path).is_file():
        raise WeightsError(f"{path}: no such Keras weights file")
    try:
        with h5py.File(path, "r") as file:
            if "layer_names" not in file.attrs and "model_weights" in file:
                file = file["model_weights"]  # a whole model saved with model.save("x.h5")
            if "layer_names" in file.attrs:
                return dict(_legacy_layers(file))
            if "layers" in file:
                return dict(_keras3_layers(file["layers"], path))
    except OSError as error:
        raise WeightsError(f"{path}: not a readable HDF5 file ({error})") from None
    raise WeightsError(f"{path}: not a Keras weights file (neither the legacy 'layer_names' "
                       f"layout nor Keras 3's 'layers' group)")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _legacy_layers(file: h5py.Group) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    for layer in map(_text, file.attrs["layer_names"]):
        group = file[layer]
        names = [_text(name) for name in group.attrs["weight_names"]]
        if names:
            # "conv1_conv/kernel:0" (Keras 2) or "conv1_conv/kernel" (Keras 3) -> "kernel"
            yield layer, {name.split("/")[-1].split(":")[0]: group[name][()] for name in names}


def _keras3_layers(layers: h5py.Group, path: Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    for key, group in layers.items():
        variables = group.get("vars")
        if variables is None or len(variables) == 0:
            continue
        if "name" not in variables.attrs:
            # Without names only Keras' positional keys are left, which cannot tell apart
            # InceptionV3's equally shaped branches: refuse rather than guess.
            raise WeightsError(f"{path}: layer {key} has no name attribute (saved by an older "
                               f"Keras 3); load it in a current Keras and save_weights again")
        arrays = [variables[str(index)][()] for index in range(len(variables))]
        kind = re.sub(r"_\d+$", "", key)
        order = _VARIABLE_ORDER.get(kind, ())
        if kind == "batch_normalization" and len(arrays) == 3:
            order = order[1:]  # scale=False: no gamma
        names = order if len(order) >= len(arrays) else [str(i) for i in range(len(arrays))]
        yield _text(variables.attrs["name"]), dict(zip(names, arrays, strict=False))


def _resnet50_layers() -> list[tuple[str, str]]:
    """(our ConvBN path, Keras layer prefix) for ResNet-50, in network order."""
    pairs = [("stem", "conv1")]
    index = 0
    for stage, num_blocks in enumerate((3, 4, 6, 3)):
        for block in range(num_blocks):
            keras, ours = f"conv{stage + 2}_block{block + 1}", f"blocks/{index}"
            pairs += [(f"{ours}/reduce", f"{keras}_1"), (f"{ours}/spatial", f"{keras}_2"),
                      (f"{ours}/expand", f"{keras}_3")]
            if block == 0:
                pairs.append((f"{ours}/projection", f"{keras}_0"))
            index += 1
    return pairs


# Our InceptionV3 ConvBN modules in the order keras.applications.InceptionV3 creates its
# conv2d_bn layers (branch by branch, each branch's layers in sequence).
_INCEPTION_A = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
                "branch3x3dbl_3", "branch_pool")
_REDUCTION_A = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")
_INCEPTION_C = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
                "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5",
                "branch_pool")
_REDUCTION_B = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
                "branch7x7x3_4")
_INCEPTION_E = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
                "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")
_INCEPTION_BLOCKS = (
    ("stem", ("conv1", "conv2", "conv3", "conv4", "conv5")),
    *((f"mixed{i}", _INCEPTION_A) for i in range(3)),
    ("mixed3", _REDUCTION_A),
    *((f"mixed{i}", _INCEPTION_C) for i in range(4, 8)),
    ("mixed8", _REDUCTION_B),
    *((f"mixed{i}", _INCEPTION_E) for i in range(9, 11)),
)


def _creation_order(names, prefix: str) -> list[str]:
    """Keras auto-names ('conv2d', 'conv2d_1', ...) sorted by the counter Keras gave them."""
    pattern = re.compile(rf"{prefix}(?:_(\d+))?")
    numbered = [(pattern.fullmatch(name), name) for name in names]
    return [name for match, name in sorted((pair for pair in numbered if pair[0]),
                                           key=lambda pair: int(pair[0].group(1) or 0))]


def _inception_v3_layers(layer_names) -> list[tuple[str, str, str]]:
    """(our ConvBN path, Keras conv name, Keras BN name) for InceptionV3, in creation order.

    Modules beyond the file's layers get a placeholder name that says so (reported missing).
    """
    ours = [f"{block}/{conv}" for block, convs in _INCEPTION_BLOCKS for conv in convs]
    convs = _creation_order(layer_names, "conv2d")
    norms = _creation_order(layer_names, "batch_normalization")
    convs += [f"conv2d #{i + 1} (the file has {len(convs)})" for i in range(len(convs), len(ours))]
    norms += [f"batch_normalization #{i + 1} (the file has {len(norms)})"
              for i in range(len(norms), len(ours))]
    return list(zip(ours, convs, norms, strict=False))


def _convbn_arrays(conv: dict[str, np.ndarray], norm: dict[str, np.ndarray],
                   where: str) -> dict[str, np.ndarray]:
    """One Keras conv + BN layer -> our ConvBN's variables (conv bias folded into the mean)."""
    renames = {"gamma": "norm/scale", "beta": "norm/bias", "moving_mean": "norm/mean",
               "moving_variance": "norm/var"}
    arrays = {f"conv/{name}": value for name, value in conv.items() if name != "bias"}
    arrays |= {renames.get(name, f"norm/{name}"): value for name, value in norm.items()}
    bias, mean = conv.get("bias"), arrays.get("norm/mean")
    if bias is not None and mean is not None:
        if bias.shape != mean.shape:
            raise WeightsError(f"{where}: conv bias {bias.shape} does not fit the BatchNorm "
                               f"after it {mean.shape}")
        arrays["norm/mean"] = mean - bias
    return arrays


def convert_keras_weights(model_name: str, source: Path) -> dict[str, np.ndarray]:
    """A Keras weights file -> float32 arrays for every backbone variable of ``model_name``.

    Keys are our variable paths ("blocks/0/reduce/conv/kernel"), in network order. Raises a
    one-line WeightsError naming the file and the first Keras layer that is missing or does
    not fit (with our variable path, expected vs found shape), or a Keras layer left over.
    """
    if model_name not in KERAS_MODELS:
        raise WeightsError(f"no Keras weights mapping for {model_name!r}; choose from: "
                           f"{', '.join(KERAS_MODELS)}")
    keras = read_keras_layers(source)
    keras.pop("predictions", None)  # a with-top file: the ImageNet classifier is not converted
    if model_name == "resnet50":
        layers = [(ours, f"{k}_conv", f"{k}_bn") for ours, k in _resnet50_layers()]
    else:
        layers = _inception_v3_layers(keras)
    arrays, source_layer = {}, {}  # our variable -> array / the Keras layer it comes from
    for ours, conv_name, norm_name in layers:
        where = f"{source}: {conv_name} + {norm_name}"
        converted = _convbn_arrays(keras.get(conv_name, {}), keras.get(norm_name, {}), where)
        arrays |= {f"{ours}/{key}": value for key, value in converted.items()}
    rank = {ours: (i, conv, norm) for i, (ours, conv, norm) in enumerate(layers)}
    model = nnx.eval_shape(lambda: build_classifier(model_name, 1, rngs=nnx.Rngs(0)))
    expected = {key: var.shape for key, var in backbone_variables(model).items()}
    for key in expected.keys() | arrays.keys():
        module, part = key.rsplit("/", 2)[0], key.split("/")[-2]
        if module in rank:
            source_layer[key] = rank[module][1 if part == "conv" else 2]
    # Report in network order, so "first mismatch" is the first layer a reader would look at.
    expected = dict(sorted(expected.items(),
                           key=lambda item: rank.get(item[0].rsplit("/", 2)[0], (len(rank),))[0]))
    check_backbone(expected, {key: a.shape for key, a in arrays.items()}, str(source),
                   source_layer)
    unused = [name for name in keras if name not in source_layer.values()]
    if unused:
        raise WeightsError(f"{source}: Keras layer {unused[0]} maps to no {model_name} variable "
                           f"({len(unused)} unused layers in all)")
    return {key: np.asarray(arrays[key], dtype=np.float32) for key in expected}
