"""Compiled programs persist in the jaxfundus cache, so later folds and runs skip compilation."""

import jax
import jax.numpy as jnp

from jaxfundus.compile_cache import enable_compilation_cache
from jaxfundus.paths import cache_dir


def test_compiled_programs_are_written_to_the_jaxfundus_cache():
    directory = enable_compilation_cache()
    assert directory == cache_dir() / "xla"  # tests' private XDG_CACHE_HOME
    assert jax.config.jax_compilation_cache_dir == str(directory)
    before = set(directory.glob("*")) if directory.exists() else set()
    previous = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:
        jax.jit(lambda x: jnp.tanh(x) @ x.T + 0.5)(jnp.ones((7, 11))).block_until_ready()
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)
    assert set(directory.glob("*")) - before
