"""Data: labels, synthetic generator, TOP validation, TFDS dataset, splits, Grain pipeline, EDA."""
