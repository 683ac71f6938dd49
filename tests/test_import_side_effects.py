"""Importing jaxfundus changes nothing in the process: entry points tune the allocator and switch
the compilation cache on, not imports (neither the allocator nor any jax.config value changes).

The allocator is observed, not the code that would tune it: glibc marks a block it served with
its own mmap by bit 1 of the size word just before the block. A 64 MiB request is mmapped by
default (it is above the dynamic mmap threshold's 32 MiB cap) and is not once
`host_memory.retain_freed_memory` has raised the threshold.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,  # each probe is a fresh interpreter importing every module
    pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                       reason="the probe reads glibc's chunk header"),
]

PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, importlib, json, pkgutil
    import jax

    jax_config = dict(jax.config.values)
    {setup}
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    block = libc.malloc(64 << 20)
    size_word = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value
    changed = sorted(k for k, v in jax.config.values.items() if jax_config.get(k) != v)
    print(json.dumps({{"mmapped": bool(size_word & 2), "jax_config_changed": changed}}))
    """
)

IMPORT_EVERYTHING = """
import jaxfundus
modules = [m.name for m in pkgutil.walk_packages(jaxfundus.__path__, "jaxfundus.")]
for name in modules:
    importlib.import_module(name)
assert len(modules) > 30, modules
"""


def _probe(setup: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAXFUNDUS_MALLOC_TUNING", "JAX_COMPILATION_CACHE_DIR")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    script = PROBE.format(setup=setup.strip())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_module_leaves_the_process_as_it_was():
    result = _probe(IMPORT_EVERYTHING)
    assert result == {"mmapped": True, "jax_config_changed": []}


def test_the_probe_sees_the_tuning_an_entry_point_applies():
    """The control: the same probe after the call tasks.py makes reports the tuning."""
    result = _probe("from jaxfundus.host_memory import retain_freed_memory\n"
                    "assert retain_freed_memory()")
    assert result["mmapped"] is False
