"""Project weights files: a pretrained backbone as safetensors, loaded strictly into a new model.

A file holds float32 arrays keyed by the model's variable paths ("blocks/0/reduce/conv/kernel"),
Params and BatchNorm statistics alike, for every variable outside the classifier's ``head``;
its metadata names the model and where the weights came from. Loading replaces every backbone
variable or none: a missing, extra or differently shaped array is a one-line ``WeightsError``.
"""

import hashlib
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxfundus.paths import cache_dir

HEAD = "head"  # the classifier attribute that is new for each task (never loaded)
FORMAT = "jaxfundus-backbone-v1"


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit the model (one line)."""


def weights_file(model_name: str) -> Path:
    """Where ``invoke weights`` writes a model's ImageNet backbone: the project cache."""
    return cache_dir() / "weights" / f"{model_name}-imagenet.safetensors"


def backbone_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    """Every Param and BatchStat outside ``model.head``, keyed "a/b/c", in the state's order."""
    variables = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, (nnx.Param, nnx.BatchStat)) and path[0] != HEAD:
            variables["/".join(map(str, path))] = node
    return variables


def check_backbone(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                   where: str, names: dict[str, str] | None = None) -> None:
    """Raise a WeightsError for the first variable (in ``expected`` order) that ``found`` lacks
    or shapes differently, then for any variable ``found`` has beyond ``expected``.

    ``where`` starts the message (the file); ``names`` optionally maps a variable to the source
    layer it came from, so the message can name that layer too.
    """
    names = names or {}
    for key, shape in expected.items():
        layer = f"{names[key]} -> " if key in names else ""
        if key not in found:
            raise WeightsError(f"{where}: {layer}{key} is missing (expected shape {shape})")
        if tuple(found[key]) != tuple(shape):
            raise WeightsError(f"{where}: {layer}{key}: expected shape {tuple(shape)}, "
                               f"found {tuple(found[key])}")
    extra = [key for key in found if key not in expected]
    if extra:
        layer = f"{names[extra[0]]} -> " if extra[0] in names else ""
        raise WeightsError(f"{where}: {layer}{extra[0]} is not a variable of this backbone "
                           f"({len(extra)} unexpected in all)")


def save_backbone(arrays: dict[str, np.ndarray], path: Path, *, model_name: str,
                  source: str) -> Path:
    """Write float32 backbone arrays to ``path`` (atomically: a partial file never appears)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in arrays.items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial),
              metadata={"format": FORMAT, "model": model_name, "source": source})
    partial.replace(path)
    return path


def read_backbone(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a project weights file; WeightsError if absent or unreadable."""
    return _open_backbone(path, lambda file, key: file.get_tensor(key))


def inspect_backbone(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(shapes, metadata) of a project weights file, read from its header alone (no array data,
    so a pre-flight check of a 100 MB file is instant); WeightsError if absent or unreadable."""
    return _open_backbone(path, lambda file, key: tuple(file.get_slice(key).get_shape()))


def _open_backbone(path: Path, read: Callable) -> tuple[dict, dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file (make it with `invoke weights "
                           f"--model=MODEL`)")
    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            values = {key: read(file, key) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a jaxfundus backbone file (format "
                           f"{metadata.get('format')!r}, expected {FORMAT!r})")
    return values, metadata


def check_model_name(path: Path, metadata: dict[str, str], model_name: str) -> None:
    """WeightsError unless the file at ``path`` was made for ``model_name``."""
    if metadata.get("model") != model_name:
        raise WeightsError(f"{path}: holds weights for {metadata.get('model')!r}, "
                           f"not {model_name!r}")


def load_backbone(model: nnx.Module, path: Path, *, model_name: str | None = None,
                  put: Callable[[np.ndarray, nnx.Variable], jax.Array] | None = None) -> dict:
    """Replace every backbone variable of ``model`` (in place) with the file's; head untouched.

    Checks the whole file before changing anything, so a failure leaves the model as it was.
    ``model_name``, when given, must match the name the file was converted for. ``put`` turns
    a file array into the variable's new value (default: ``jnp.asarray`` in its dtype); the
    training loop passes one that places it on every device. Returns the file's metadata
    (model, source).
    """
    arrays, metadata = read_backbone(path)
    if model_name is not None:
        check_model_name(path, metadata, model_name)
    variables = backbone_variables(model)
    check_backbone({key: var.shape for key, var in variables.items()},
                   {key: array.shape for key, array in arrays.items()}, str(path))
    put = put or (lambda array, variable: jnp.asarray(array, dtype=variable.dtype))
    for key, variable in variables.items():
        variable.set_value(put(arrays[key], variable))
    return metadata


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
