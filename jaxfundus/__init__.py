"""jaxfundus: disease and anomaly detection in fundus photographs with JAX/Flax.

Importing the package changes nothing in the process: entry points (tasks.py, benchmarks/) tune
the allocator (`host_memory`) and commands switch the compilation cache on (`compile_cache`).
"""

__version__ = "0.1.0"
