"""How a run's classifier starts (`--init`): from scratch, or with its backbone from a project
weights file (`jaxfundus.models.pretrained`; `invoke weights` makes the ImageNet one).

`RunConfig.init` values:

    None / "scratch"        random initialisation (the default)
    "imagenet"              the model's ImageNet file in the cache (`weights_file`); an error
                            when it is not there
    "imagenet-if-cached"    "imagenet" when the cache holds that file, else scratch: what the
                            `paper` preset uses, so it runs on a machine that never converted
                            the weights and uses them on one that did
    any other text          the path of a project weights file

The input normalisation follows the initialisation (`keras_weights.normalization_for`): a
Keras-converted backbone expects Keras' preprocessing.
"""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from jaxfundus.models.keras_weights import KERAS_MODELS, normalization_for
from jaxfundus.models.pretrained import (
    WeightsError,
    backbone_variables,
    check_backbone,
    check_model_name,
    file_sha256,
    inspect_backbone,
    weights_file,
)
from jaxfundus.models.registry import build_classifier

SCRATCH = "scratch"
IMAGENET = "imagenet"
IMAGENET_IF_CACHED = "imagenet-if-cached"


def is_pretrained(init: str | None) -> bool:
    """True when `init` starts the backbone from a weights file (resolved or not)."""
    return init not in (None, SCRATCH)


def weights_path(model_name: str, init: str | None) -> Path | None:
    """The weights file `init` names for `model_name`; None from scratch.

    WeightsError for "imagenet" on a model that has no ImageNet weights.
    """
    if not is_pretrained(init):
        return None
    if init in (IMAGENET, IMAGENET_IF_CACHED):
        if model_name not in KERAS_MODELS:
            raise WeightsError(f"no ImageNet weights for {model_name!r}; they exist for "
                               f"{', '.join(KERAS_MODELS)} (e.g. --model={KERAS_MODELS[0]})")
        return weights_file(model_name)
    return Path(init).expanduser()


def resolve_init(model_name: str, init: str | None) -> tuple[str | None, str | None]:
    """(`init` as the run uses it, the start-up line that says so, or None when unsaid).

    "imagenet-if-cached" becomes "imagenet" when the cache holds the model's file and None
    (scratch) otherwise, with a line saying which and how to get the file; "scratch" becomes
    None. Other values are returned as they are (checked by `check_init`).
    """
    if init == IMAGENET_IF_CACHED:
        if model_name not in KERAS_MODELS:
            return None, (f"{model_name}: trains from scratch (ImageNet weights exist only for "
                          f"{', '.join(KERAS_MODELS)})")
        path = weights_file(model_name)
        if path.is_file():
            return IMAGENET, f"{model_name}: starts from the ImageNet weights in {path}"
        return None, (f"{model_name}: trains from scratch: no ImageNet weights in {path}; "
                      f"to fine-tune from ImageNet run `invoke weights --model={model_name}` "
                      "on a machine with internet, then train again")
    if not is_pretrained(init):
        return None, None
    return init, f"{model_name}: starts from the backbone in {weights_path(model_name, init)}"


def check_init(model_name: str, init: str | None) -> None:
    """Before training: a one-line WeightsError naming the file (and the first variable that
    does not fit) unless `init` is scratch or names a weights file made for `model_name` that
    holds every backbone variable in its shape. Reads the file's header only."""
    path = weights_path(model_name, init)
    if path is None:
        return
    normalization_for(model_name, init)  # a model without Keras preprocessing cannot start
    if init in (IMAGENET, IMAGENET_IF_CACHED) and not path.is_file():
        raise WeightsError(f"{path}: no ImageNet weights for {model_name} in the cache; make "
                           f"them with `invoke weights --model={model_name}` (once, on a "
                           "machine with internet and TensorFlow)")
    shapes, metadata = inspect_backbone(path)
    check_model_name(path, metadata, model_name)
    model = nnx.eval_shape(lambda: build_classifier(model_name, 1, rngs=nnx.Rngs(0)))
    expected = {key: tuple(var.shape) for key, var in backbone_variables(model).items()}
    check_backbone(expected, shapes, str(path))


def init_provenance(model_name: str, init: str | None) -> dict[str, str | None]:
    """What config.json and the report record about a run's start: `init`, and for a weights
    file its name, path, SHA-256 and where it came from (the converted Keras file and that
    file's SHA-256, from the file's metadata)."""
    path = weights_path(model_name, init)
    if path is None:
        return {"init": SCRATCH}
    _, metadata = inspect_backbone(path)
    return {"init": init, "weights_file": path.name, "weights_path": str(path),
            "weights_sha256": file_sha256(path), "weights_source": metadata.get("source")}

