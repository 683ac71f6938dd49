"""jaxfundus: disease and anomaly detection in fundus photographs with JAX/Flax."""

__version__ = "0.1.0"
