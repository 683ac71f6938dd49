"""JAX's persistent compilation cache in the jaxfundus cache directory.

Every fold, task and later run of the same model and shapes compiles the same XLA programs; on a
2-core CPU a ResNet training step takes 10-15 s to compile and 2-3 s to load from the cache.
JAX keys entries by program, jax/jaxlib version, backend and flags, so one directory serves all.
"""

import os
from pathlib import Path

import jax

from jaxfundus.paths import cache_dir


def enable_compilation_cache() -> Path | None:
    """Cache compiled programs under `cache_dir()/xla`; returns the directory in use.

    A directory already configured (JAX_COMPILATION_CACHE_DIR or jax.config) is kept;
    JAXFUNDUS_COMPILATION_CACHE=0 turns the cache off.
    """
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    if os.environ.get("JAXFUNDUS_COMPILATION_CACHE") == "0":
        return None
    directory = cache_dir() / "xla"
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory
