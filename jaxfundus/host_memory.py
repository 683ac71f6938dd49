"""Keep freed host memory in the process so XLA:CPU's per-step buffers are not faulted in anew.

XLA:CPU allocates each execution's temporary buffer (725 MB for a ResNet-50 step at 128 px,
batch 16) with malloc and frees it afterwards. glibc serves a request that large with a fresh
mmap and returns it with munmap, so every step page-faults the whole buffer again: 188k minor
faults and ~0.5 s of kernel time per step on a 2-core CPU, about 12% of the step. With one
arena, a high mmap threshold and no trimming, the buffer stays mapped and is reused.

Only glibc on Linux is affected; elsewhere (and with JAXFUNDUS_MALLOC_TUNING=0) it does nothing.
It must run before the threads that allocate start, so entry points call it before they import
jax (tasks.py, benchmarks/*.py); importing jaxfundus does not, as a library must not change the
allocator of the process that imports it.
"""

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
LARGEST_INT = 2**31 - 1  # mallopt takes a C int; glibc caps the mmap threshold below this


def retain_freed_memory() -> bool:
    """Tune glibc malloc to reuse large freed blocks; True when the tuning was applied."""
    if not sys.platform.startswith("linux") or os.environ.get("JAXFUNDUS_MALLOC_TUNING") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, LARGEST_INT), (M_TRIM_THRESHOLD, LARGEST_INT))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
