"""The one training loop and the per-method step functions."""
