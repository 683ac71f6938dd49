"""Data: labels, the stored layout, TOP validation, TFDS dataset, splits, Grain pipeline, EDA (the
generator of synthetic TOP data lives in `jaxfundus.synthetic`)."""
