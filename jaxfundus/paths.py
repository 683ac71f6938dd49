"""Where jaxfundus keeps files of its own outside a run folder (the user cache)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jaxfundus` (default ~/.cache/jaxfundus): the synthetic default dataset
    and the compiled-program cache."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxfundus"
