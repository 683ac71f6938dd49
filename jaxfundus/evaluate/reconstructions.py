"""Look inside the anomaly detectors: input / reconstruction / anomaly-map panels, and how well
the anomaly maps localise lesions (pixel AUROC against the generator's lesion masks).

The study could not look at GANomaly's reconstructions; here every anomaly run saves them. The
detector (`method`) supplies its anomaly map (`anomaly_maps(state, images)`, the same map its
image score pools) and, when it has one, its reconstruction (`reconstruct(state, images)`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from jaxfundus.data.images import letterbox
from jaxfundus.data.labels import DISEASES, NORMAL
from jaxfundus.data.pipeline import normalize, resize
from jaxfundus.metrics import roc_auc

MAX_LOCALISATION_IMAGES = 64
MAP_COLOURS = "inferno"
PREDICT_PANEL_SIZE = 256  # px per panel of `invoke predict`'s anomaly-map picture


def anomaly_maps(method, state, images_uint8: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """uint8[N,S,S,3] -> (reconstructions uint8[N,S,S,3], or None for a detector without one;
    the method's anomaly maps float32[N,S,S])."""
    x = normalize(images_uint8, method.normalization)
    maps = np.asarray(jax.jit(method.anomaly_maps)(state, x))
    if not hasattr(method, "reconstruct"):
        return None, maps
    recon = np.asarray(jax.jit(method.reconstruct)(state, x))
    return np.clip((recon + 1.0) * 127.5, 0, 255).astype(np.uint8), maps


def showcase_rows(test_frame: pd.DataFrame, index: pd.DataFrame) -> list[tuple[str, int]]:
    """One test image per class present (normal first, then each disease): (class, data index)."""
    diseases = index.set_index("index").loc[test_frame["index"], list(DISEASES)]
    rows = []
    ordered = test_frame.assign(_n=diseases.sum(1).to_numpy()).sort_values("filename")
    normal = ordered[ordered["_n"] == 0]
    if len(normal):
        rows.append((NORMAL, int(normal["index"].iloc[0])))
    for disease in DISEASES:
        has = diseases.loc[ordered["index"], disease].to_numpy() == 1
        if has.any():
            rows.append((disease, int(ordered["index"].to_numpy()[has][0])))
    return rows


def write_reconstructions(method, state, dataset, test_frame: pd.DataFrame, image_size: int,
                          out_path: Path) -> None:
    """Save the panel grid (one row per class: input, reconstruction if any, anomaly map)."""
    rows = showcase_rows(test_frame, dataset.index)
    if not rows:
        return
    images = np.stack([_image(dataset, i, image_size) for _, i in rows])
    recon, maps = anomaly_maps(method, state, images)
    low, high = _colour_range(method, maps)
    columns = 2 if recon is None else 3
    figure = Figure(figsize=(2 * columns, 2 * len(rows)), dpi=90)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, (name, _) in enumerate(rows):
        panels = [(images[r], f"{name}: input")]
        if recon is not None:
            panels.append((recon[r], "reconstruction"))
        panels.append((maps[r], method.map_title))
        for c, (picture, title) in enumerate(panels):
            ax = axes[r, c]
            is_map = c == columns - 1
            ax.imshow(picture, cmap=MAP_COLOURS if is_map else None,
                      vmin=low if is_map else None, vmax=high if is_map else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)


def save_anomaly_map(path: Path, image: np.ndarray, anomaly_map: np.ndarray,
                     value_range: tuple[float, float] | None = None) -> Path:
    """A PNG of uint8[S,S,3] `image` beside its anomaly map float[S,S] in colour (scaled to
    `value_range`, else to the map's own range), each panel PREDICT_PANEL_SIZE px square."""
    low, high = value_range or (float(anomaly_map.min()), float(anomaly_map.max()))
    scaled = np.clip((anomaly_map - low) / max(high - low, 1e-12), 0, 1)
    heat = (colormaps[MAP_COLOURS](scaled)[..., :3] * 255).astype(np.uint8)
    size = (PREDICT_PANEL_SIZE, PREDICT_PANEL_SIZE)
    panels = [Image.fromarray(image).resize(size, Image.Resampling.BILINEAR),
              Image.fromarray(heat).resize(size, Image.Resampling.NEAREST)]
    picture = Image.new("RGB", (2 * size[0], size[1]))
    for i, panel in enumerate(panels):
        picture.paste(panel, (i * size[0], 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def localisation_auroc(method, state, dataset, test_frame: pd.DataFrame,
                       image_size: int) -> dict:
    """Pixel AUROC of anomaly maps vs lesion masks over anomalous test images that have masks."""
    masks_dir = getattr(dataset, "masks_dir", None)
    if masks_dir is None or not Path(masks_dir).is_dir():
        return {"pixel_auroc": None, "n_localisation_images": 0}
    anomalous = test_frame[test_frame["label"] == 1].sort_values("filename")
    chosen = []
    for _, row in anomalous.iterrows():
        path = Path(masks_dir) / (Path(row["filename"]).stem + ".png")
        if path.is_file():
            chosen.append((int(row["index"]), path))
        if len(chosen) == MAX_LOCALISATION_IMAGES:
            break
    if not chosen:
        return {"pixel_auroc": None, "n_localisation_images": 0}
    images = np.stack([_image(dataset, i, image_size) for i, _ in chosen])
    _, maps = anomaly_maps(method, state, images)
    masks = np.stack([_mask(path, dataset.stored_size, image_size) for _, path in chosen])
    if masks.all() or not masks.any():
        return {"pixel_auroc": None, "n_localisation_images": len(chosen)}
    return {"pixel_auroc": roc_auc(masks.ravel(), maps.ravel()),
            "n_localisation_images": len(chosen)}


def _colour_range(method, maps: np.ndarray) -> tuple[float, float]:
    """The method's fixed map range, else 0 to the maps' 99.5th percentile (shared by rows)."""
    if method.map_range is not None:
        return method.map_range
    return 0.0, float(np.percentile(maps, 99.5)) or 1.0


def _image(dataset, index: int, image_size: int) -> np.ndarray:
    return resize(np.asarray(dataset.source[index]["image"]), image_size)


def _mask(path: Path, stored_size: int, image_size: int) -> np.ndarray:
    """The lesion mask letterboxed exactly like its image: bool[S,S]."""
    mask = np.asarray(Image.open(path).convert("L"))
    boxed = letterbox(np.repeat(mask[..., None], 3, axis=-1), stored_size)
    return resize(boxed, image_size)[..., 0] > 127
