"""The import graph of jaxfundus/ reads top to bottom.

tasks -> commands -> experiment -> train / evaluate -> models / data / synthetic -> config.
A module may import what lies below it, never what lies above; the TFDS builder (tfds_builder/)
sits above jaxfundus.data and is imported only inside the function that builds.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jaxfundus"

# Packages (or modules) each layer must not import, at module level or inside a function.
_TOP = ("experiment", "predict", "commands", "bench", "errors")
ABOVE = {
    "jaxfundus.metrics": ("data", "synthetic", "models", "train", "evaluate", "methods", "runs",
                          *_TOP),
    "jaxfundus.runs": ("data", "synthetic", "models", "train", "evaluate", "methods", *_TOP),
    "jaxfundus.data": ("train", "evaluate", "methods", *_TOP),
    "jaxfundus.synthetic": ("train", "evaluate", "methods", *_TOP),
    "jaxfundus.models": ("train", "evaluate", "methods", *_TOP),
    "jaxfundus.train": ("evaluate", "methods", *_TOP),
    "jaxfundus.evaluate": ("methods", *_TOP),
    "jaxfundus.methods": _TOP,
    "jaxfundus.experiment": ("predict", "commands"),
    "jaxfundus.predict": ("experiment", "commands"),
}
# Imports that break the rule today and are being moved in other branches of issue 10; each
# entry must still occur (the test says when one can go).
PENDING: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level) for every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from jaxfundus.data import layout` imports the module jaxfundus.data.layout.
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else base), id(node) in top_level


def _edges(module_level_only: bool = False) -> set[tuple[str, str]]:
    return {(name, imported) for name, path in MODULES.items()
            for imported, top in _imports(name, path)
            if (top or not module_level_only)
            and (imported == "jaxfundus" or imported.startswith(("jaxfundus.", "tfds_builder")))}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_parser_sees_the_package():
    edges = _edges()
    assert ("jaxfundus.data.datasets", "jaxfundus.data.layout") in edges
    assert ("jaxfundus.data.tfds_dataset", "tfds_builder.tsukazaki_optos."
            "tsukazaki_optos_dataset_builder") in edges  # the lazy one, inside build_dataset


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_no_layer_imports_a_layer_above_it(layer):
    upward = {(source, target) for source, target in _edges()
              if _inside(source, layer)
              and any(_inside(target, f"jaxfundus.{above}") for above in ABOVE[layer])}
    assert upward - PENDING == set(), f"{layer} imports a layer above it"


def test_pending_exceptions_still_occur():
    gone = PENDING - _edges()
    assert not gone, f"these imports are gone: remove them from PENDING: {sorted(gone)}"


def test_jaxfundus_never_imports_the_builder_at_module_level():
    assert not {(s, t) for s, t in _edges(module_level_only=True) if t.startswith("tfds_builder")}


def test_module_level_imports_have_no_cycles():
    graph: dict[str, set[str]] = {}
    for source, target in _edges(module_level_only=True):
        graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):]
                                                                + (module,)))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
