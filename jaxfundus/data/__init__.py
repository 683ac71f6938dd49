"""Data: label vocabulary, synthetic generator, TOP source validation, splits, Grain pipeline, EDA."""
