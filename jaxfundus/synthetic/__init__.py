"""The procedural fundus generator: synthetic TOP-layout data, the project's default dataset.

`generate(out_dir)` writes data.csv, img/ and (optionally) lesion masks/ exactly as the real
Tsukazaki Optos data is laid out, so the real-data path in `jaxfundus.data` reads both.
Modules: cohort (patients and labels), canvas (drawing surface and eye geometry), anatomy
(healthy fundus), lesions (one painter per disease), generator (rendering and writing).
"""

from jaxfundus.synthetic.generator import GENERATOR_VERSION, SUMMARY_FILE, generate

__all__ = ["GENERATOR_VERSION", "SUMMARY_FILE", "generate"]
