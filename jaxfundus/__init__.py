"""jaxfundus: disease and anomaly detection in fundus photographs with JAX/Flax."""

from jaxfundus.host_memory import retain_freed_memory

__version__ = "0.1.0"

# Before jax starts its threads: see host_memory (about 12% of a CPU training step).
retain_freed_memory()
