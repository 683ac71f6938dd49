"""Flax NNX models and the name -> constructor registry."""
