"""Look inside the anomaly detectors: input / reconstruction / anomaly-map panels, and how well
the anomaly maps localise lesions (pixel AUROC against the generator's lesion masks).

The study could not look at GANomaly's reconstructions; here every anomaly run saves them.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from jaxfundus.data.images import letterbox
from jaxfundus.data.labels import DISEASES, NORMAL
from jaxfundus.data.pipeline import normalize, resize
from jaxfundus.metrics import roc_auc

MAX_LOCALISATION_IMAGES = 64


def anomaly_maps(method, state, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8[N,S,S,3] -> (reconstructions uint8[N,S,S,3], maps float32[N,S,S] = mean |x - x'|)."""
    x = normalize(images_uint8, "tanh")
    recon = np.asarray(jax.jit(method.reconstruct)(state, x))
    maps = np.abs(x - recon).mean(-1)
    recon_uint8 = np.clip((recon + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return recon_uint8, maps


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
    """Save the panel grid (one row per class: input, reconstruction, anomaly map)."""
    rows = showcase_rows(test_frame, dataset.index)
    if not rows:
        return
    images = np.stack([_image(dataset, i, image_size) for _, i in rows])
    recon, maps = anomaly_maps(method, state, images)
    figure = Figure(figsize=(6, 2 * len(rows)), dpi=90)
    axes = figure.subplots(len(rows), 3, squeeze=False)
    vmax = float(np.percentile(maps, 99.5)) or 1.0
    for r, (name, _) in enumerate(rows):
        for c, (picture, title) in enumerate(
                ((images[r], f"{name}: input"), (recon[r], "reconstruction"),
                 (maps[r], "|input - reconstruction|"))):
            ax = axes[r, c]
            ax.imshow(picture, cmap="inferno" if c == 2 else None, vmin=0,
                      vmax=vmax if c == 2 else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)


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


def _image(dataset, index: int, image_size: int) -> np.ndarray:
    return resize(np.asarray(dataset.source[index]["image"]), image_size)


def _mask(path: Path, stored_size: int, image_size: int) -> np.ndarray:
    """The lesion mask letterboxed exactly like its image: bool[S,S]."""
    mask = np.asarray(Image.open(path).convert("L"))
    boxed = letterbox(np.repeat(mask[..., None], 3, axis=-1), stored_size)
    return resize(boxed, image_size)[..., 0] > 127
