"""Procedural fundus dataset in the TOP layout: the project's embedded default data.

`generate(out_dir)` writes exactly what the real Tsukazaki Optos (TOP) dataset provides, so the
same code path reads both:

    out_dir/data.csv               header labels.CSV_COLUMNS; one row per image
    out_dir/img/NNNNNN_MM.jpg      exam number, index within the exam; RGB, width x height
    out_dir/masks/NNNNNN_MM.png    only with masks=True: uint8 (H, W), 255 where a lesion is drawn
    out_dir/synthetic.json         generator version, seed, parameters and counts

Label statistics follow TOP scaled by `scale`; pictures are drawn by `anatomy` and
`lesions`. Every image's randomness derives from (seed, image index) and from its
patient, so output is identical whatever the number of workers.
"""

from __future__ import annotations

import collections
import csv
import functools
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from jaxfundus.data.labels import CSV_COLUMNS, DISEASES, NORMAL
from jaxfundus.synthetic.anatomy import (
    PALETTES,
    STYLES,
    Anatomy,
    Fundus,
    PatientLook,
    colour_frame,
    layout,
    optos_frame,
    paint_background,
    paint_disc,
    paint_macula,
    paint_vessels,
    sample_look,
)
from jaxfundus.synthetic.canvas import Canvas, draw_discs
from jaxfundus.synthetic.cohort import ImageSpec, plan_cohort
from jaxfundus.synthetic.lesions import ADJUSTERS, PAINTERS

GENERATOR_VERSION = "1"  # bump when the pictures or the cohort change
SUMMARY_FILE = "synthetic.json"

# RNG streams: seeds are (seed, stream, keys...), so no two streams ever share a sequence
# (stream 0 plans the cohort).
_PATIENT, _IMAGE, _LESION, _JPEG = 1, 2, 3, 4
NOISE_ROWS = 256


@dataclass(frozen=True)
class RenderConfig:
    """Picture parameters shared by every image of a generated dataset."""

    seed: int
    style: str
    width: int
    height: int
    severity: float


@functools.lru_cache(maxsize=16)
def _patient_look(seed: int, patient_key: int) -> PatientLook:
    """A patient's appearance; cached because workers draw a patient's images one after another."""
    return sample_look(np.random.default_rng([seed, _PATIENT, patient_key]))


def render_image(spec: ImageSpec, config: RenderConfig) -> tuple[np.ndarray, np.ndarray]:
    """Draws one picture: RGB (H, W, 3) uint8 and its lesion mask (H, W) uint8 (0 or 255)."""
    eye = 0 if spec.eye == "R" else 1
    look = _patient_look(config.seed, spec.patient_key)
    rng = np.random.default_rng([config.seed, _IMAGE, spec.index])
    geo = layout(config.style, config.width, config.height, spec.eye, look, rng)
    fundus = Fundus(config.style, geo, look, PALETTES[config.style], Anatomy(look.cup_ratio))
    lesions = []
    for disease in spec.labels:
        # Seeded per eye and disease, so severity and lesion layout persist across visits.
        layout_rng = np.random.default_rng(
            [config.seed, _LESION, spec.patient_key, eye, DISEASES.index(disease)]
        )
        severity = config.severity * (0.25 + layout_rng.beta(2.2, 1.6)) * rng.uniform(0.9, 1.1)
        if severity <= 0:
            continue
        if disease in ADJUSTERS:
            ADJUSTERS[disease](fundus.anatomy, layout_rng, severity)
        lesions.append((PAINTERS[disease], layout_rng, severity))

    canvas = Canvas(config.height, config.width)
    paint_background(canvas, fundus, rng)
    paint_macula(canvas, fundus)
    paint_disc(canvas, fundus)
    paint_vessels(canvas, fundus)
    for painter, layout_rng, severity in lesions:
        painter(canvas, fundus, layout_rng, rng, severity)
    _paint_dust(canvas, fundus, rng)
    frame = optos_frame if config.style == "optos" else colour_frame
    canvas.mask[frame(canvas, fundus, rng)] = 0  # lesions hidden by lids or outside the field
    return _camera(canvas, rng), canvas.mask


def _paint_dust(canvas: Canvas, fundus: Fundus, rng: np.random.Generator) -> None:
    """Soft dark spots from dust on the optics: lesion-like nuisance, not in the mask."""
    if rng.random() > 0.3:
        return
    n = int(rng.integers(1, 4))
    h, w = canvas.mask.shape
    shape = canvas.layer()
    draw_discs(shape, rng.uniform((0, 0), (w, h), (n, 2)), rng.uniform(0.2, 0.6, n) * fundus.geo.dd)
    canvas.shade(shape, (0.8, 0.8, 0.8), 0.5, blur=0.3 * fundus.geo.dd)


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    """(height + NOISE_ROWS, width, 3) float32 unit Gaussian noise; images use row-shifted
    crops of it because fresh noise per image costs more than the rest of the camera model."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((height + NOISE_ROWS, width, 3), dtype=np.float32)


def _camera(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Capture nuisance (defocus, exposure, noise, gamma): float canvas -> (H, W, 3) uint8.

    Head tilt, zoom and framing jitter are already in the Geometry (see `layout`).
    """
    h, w = canvas.mask.shape
    canvas.scale_channels(rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3))
    rgb = canvas.rgb
    if rng.random() < 0.15:
        rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.4, 1.0) * w / 512)
    offset = int(rng.integers(0, NOISE_ROWS))
    rgb = cv2.scaleAdd(_noise_bank(h, w)[offset : offset + h], float(rng.uniform(0.005, 0.02)), rgb)
    rgb = cv2.convertScaleAbs(rgb, alpha=255)  # saturating float -> uint8
    gamma = (np.arange(256) / 255) ** rng.uniform(0.9, 1.1) * 255 + 0.5
    return cv2.LUT(rgb, gamma.astype(np.uint8))


_worker_job: tuple[RenderConfig, Path, bool] | None = None


def _init_worker(*job) -> None:
    """Pool initializer: keeps the job (config, out_dir, masks) for `_write_image`."""
    global _worker_job
    _worker_job = job
    cv2.setNumThreads(1)  # parallelism comes from the process pool


def _write_image(spec: ImageSpec, job: tuple[RenderConfig, Path, bool] | None = None) -> None:
    """Renders one spec and writes its JPEG (and mask PNG) into the output directory."""
    config, out_dir, masks = job or _worker_job
    rgb, mask = render_image(spec, config)
    quality = int(np.random.default_rng([config.seed, _JPEG, spec.index]).integers(86, 95))
    Image.fromarray(rgb).save(out_dir / "img" / spec.filename, quality=quality)
    if masks:
        cv2.imwrite(str(out_dir / "masks" / spec.filename.replace(".jpg", ".png")), mask)


def _write_in_pool(specs: list[ImageSpec], workers: int, job: tuple) -> None:
    """Writes the images with `workers` spawned processes (safe under threaded parents such
    as JAX, and the same on every platform)."""
    # Grouped by patient so each worker's appearance cache hits.
    by_patient = sorted(specs, key=lambda s: s.patient_key)
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, context, _init_worker, job) as pool:
            for _ in pool.map(_write_image, by_patient, chunksize=16):
                pass
    except BrokenProcessPool as error:
        raise RuntimeError(
            "synthetic.generate: worker processes died. Spawned workers re-import the main "
            "module, so call generate() from an importable file under "
            "`if __name__ == '__main__':` (not from stdin), or pass workers=1"
        ) from error


def _prepare_dir(out_dir: Path, masks: bool) -> None:
    """Empties a previous synthetic dataset; refuses any other non-empty directory."""
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / SUMMARY_FILE).is_file():
            raise FileExistsError(
                f"out_dir {out_dir} is not empty and has no {SUMMARY_FILE}; refusing to "
                "overwrite what may be real data"
            )
        # data.csv first: a directory without it is an incomplete dataset.
        (out_dir / "data.csv").unlink(missing_ok=True)
        for name in ("img", "masks"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("img", "masks") if masks else ("img",):
        (out_dir / name).mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, specs: list[ImageSpec]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for s in specs:
            flags = [int(d in s.labels) for d in DISEASES]
            writer.writerow([s.filename, s.patient_id, s.age, s.sex, s.eye, *flags])


def _summary(config: RenderConfig, params: dict, specs: list[ImageSpec]) -> dict:
    """What synthetic.json records: provenance, every parameter and the planned counts."""
    label_sets = collections.Counter("+".join(s.labels) or NORMAL for s in specs)
    return {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "params": params,
        "n_images": len(specs),
        "n_patients": len({s.patient_id for s in specs}),
        "n_exams": len({s.filename.split("_")[0] for s in specs}),
        "n_normal": label_sets[NORMAL],
        "label_counts": {d: sum(d in s.labels for s in specs) for d in DISEASES},
        "label_set_counts": dict(label_sets.most_common()),
    }


def _validate(scale, seed, style, width, height, severity, min_images_per_class, workers) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if width < 32 or height < 32:
        raise ValueError(f"width and height must be >= 32 pixels, got {width}x{height}")
    if not severity >= 0:
        raise ValueError(f"severity must be >= 0, got {severity}")
    if min_images_per_class < 0:
        raise ValueError(f"min_images_per_class must be >= 0, got {min_images_per_class}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be None or >= 1, got {workers}")


def generate(
    out_dir: str | os.PathLike,
    *,
    scale: float = 0.1,
    seed: int = 0,
    style: str = "optos",
    width: int = 512,
    height: int = 384,
    severity: float = 1.0,
    min_images_per_class: int = 40,
    masks: bool = False,
    workers: int | None = None,
) -> dict:
    """Writes a synthetic TOP-layout dataset into `out_dir` and returns its summary.

    scale: fraction of TOP's 13,047 images; each single-label group (normal, each disease
        alone, DR+DM) keeps at least `min_images_per_class` images. The default gives ~1,400.
    style: "optos" (ultra-widefield pseudo-colour) or "colour" (45-degree colour fundus photo).
    severity: multiplies every image's lesion severity, drawn per eye and disease from about
        0.25-1.25 so that some cases are subtle; 0 draws no lesions at all.
    masks: also write lesion masks under masks/.
    workers: processes to draw with; None uses every available core.

    The same seed and parameters give the same data.csv and pixels whatever `workers` is
    (spawned workers re-import the caller's main module: guard scripts with
    `if __name__ == "__main__":`). An existing
    synthetic dataset in `out_dir` is replaced; any other non-empty directory is an error.
    """
    _validate(scale, seed, style, width, height, severity, min_images_per_class, workers)
    out_dir = Path(out_dir)
    specs = plan_cohort(scale, min_images_per_class, int(seed))
    if not specs:
        raise ValueError(f"scale={scale} with min_images_per_class={min_images_per_class} "
                         "plans no images")
    config = RenderConfig(int(seed), style, width, height, float(severity))
    params = {k: v for k, v in asdict(config).items() if k != "seed"}
    params.update(scale=scale, min_images_per_class=min_images_per_class, masks=masks)
    summary = _summary(config, params, specs)

    _prepare_dir(out_dir, masks)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if workers is None:
        workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    workers = max(min(workers, len(specs)), 1)
    job = (config, out_dir, masks)
    if workers == 1:
        for spec in specs:
            _write_image(spec, job)
    else:
        _write_in_pool(specs, workers, job)
    _write_csv(out_dir / "data.csv", specs)
    return summary
