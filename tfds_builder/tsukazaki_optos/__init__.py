"""TFDS builder for the Tsukazaki Optos Public (TOP) dataset; see README.md.

The builder module is not imported here: `tfds build` loads it by path, and importing it twice
under two module names would register the dataset twice.
"""
