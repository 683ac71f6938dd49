"""Where a trained classifier looked on its test split, at training/evaluation time: a grid of
test images with their Grad-CAM maps (saliency.png, which the report embeds, so the report
needs no jax), and the saliency pixel AUROC per class against the generator's lesion masks.

The maps come from `jaxfundus.evaluate.saliency.GradCam`; images and masks are prepared exactly
as for training (letterboxed to the stored size, resized to the model's size).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from jaxfundus.data.pipeline import normalize
from jaxfundus.evaluate.reconstructions import _image as test_image
from jaxfundus.evaluate.reconstructions import _mask as lesion_mask
from jaxfundus.evaluate.saliency import GradCam, overlay, saliency_pixel_auroc

EXAMPLES_PER_CELL = 2  # correct and wrong test images shown per class
MAX_LOCALISATION_IMAGES = 32  # per class: bounds the Grad-CAM work of a fold
CHUNK = 16  # images per Grad-CAM call; fixed so every call has the shape of the first
CELL, CAPTION, GAP, TITLE = 128, 30, 8, 24  # saliency.png layout, px


@dataclasses.dataclass(frozen=True)
class Cell:
    """One picture of the grid: test image `image` (row of the test table) shown in the row of
    class `row`, with the map of class `shown`."""

    row: int
    image: int
    correct: bool
    shown: int


def class_maps(gradcam: GradCam, images: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Grad-CAM maps float32[N, S, S] of model inputs float32[N, S, S, 3], one class per image
    (int[N]); run in CHUNK-sized calls, the last one padded, so it compiles once."""
    maps = []
    for start in range(0, len(images), CHUNK):
        batch, ids = images[start:start + CHUNK], class_ids[start:start + CHUNK]
        padding = CHUNK - len(batch)
        if padding:
            batch = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
            ids = np.concatenate([ids, np.zeros(padding, ids.dtype)])
        maps.append(gradcam(batch, ids).maps[:CHUNK - padding])
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]), np.float32)


def grid_cells(truth: np.ndarray, predicted: np.ndarray,
               predicted_class: np.ndarray | None) -> list[Cell]:
    """Up to EXAMPLES_PER_CELL correct, then as many wrong, test images per class.

    truth, predicted: bool[N, C] (the image has / was given class c). A correct image of class c
    is one predicted to have c. Maps show predicted_class int[N] where given (single-label: why
    it answered what it answered), else the row's class (multi-label).
    """
    cells = []
    for c in range(truth.shape[1]):
        members = np.flatnonzero(truth[:, c])
        for correct in (True, False):
            chosen = members[predicted[members, c] == correct][:EXAMPLES_PER_CELL]
            cells.extend(Cell(c, int(i), correct,
                              int(predicted_class[i]) if predicted_class is not None else c)
                         for i in chosen)
    return cells


def write_grid(images: np.ndarray, maps: np.ndarray, cells: list[Cell], classes: tuple[str, ...],
               probs: np.ndarray, title: str, path: Path) -> None:
    """saliency.png: one row per class, EXAMPLES_PER_CELL correct then wrong images with their
    maps; images uint8[M, S, S, 3] and maps float32[M, S, S] in the order of `cells`.

    Drawn with PIL, not matplotlib: a figure of 20-40 axes took about a second per fold."""
    rows = sorted({cell.row for cell in cells})
    columns = 2 * EXAMPLES_PER_CELL
    font = ImageFont.load_default(size=11)
    width, height = columns * (CELL + GAP) + GAP, TITLE + len(rows) * (CAPTION + CELL + GAP)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((GAP, 4), title, fill="black", font=font)
    filled: dict[tuple[int, bool], int] = {}
    for k, cell in enumerate(cells):
        n = filled.get((cell.row, cell.correct), 0)
        filled[(cell.row, cell.correct)] = n + 1
        x, y = _cell_corner(rows.index(cell.row), n + (0 if cell.correct else EXAMPLES_PER_CELL))
        picture = Image.fromarray(overlay(images[k], maps[k])).resize(
            (CELL, CELL), Image.Resampling.BICUBIC)
        grid.paste(picture, (x, y + CAPTION))
        verdict = "right" if cell.correct else "wrong"
        draw.text((x, y), f"{classes[cell.row]}, {verdict}\nmap: {classes[cell.shown]} "
                          f"p={probs[cell.image, cell.shown]:.2f}", fill="black", font=font)
    for r, row in enumerate(rows):  # say so where a class has no right (or no wrong) image
        for correct, column in ((True, 0), (False, EXAMPLES_PER_CELL)):
            if (row, correct) not in filled:
                x, y = _cell_corner(r, column)
                draw.text((x, y + CAPTION + CELL // 2), f"{classes[row]}: none "
                          f"{'right' if correct else 'wrong'}", fill="grey", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")


def _cell_corner(row: int, column: int) -> tuple[int, int]:
    """Top-left pixel of a grid cell (its caption, then its picture)."""
    return GAP + column * (CELL + GAP), TITLE + row * (CAPTION + CELL + GAP)


def localisation(gradcam: GradCam, dataset, test_frame: pd.DataFrame, truth: np.ndarray,
                 classes: tuple[str, ...], image_size: int, normalization: str) -> dict:
    """Saliency pixel AUROC per class: the map of class c on test images that have c and a
    lesion mask (up to MAX_LOCALISATION_IMAGES, by filename) against that mask; 0.5 is chance.
    {} without a masks folder; a class without masked images or lesion pixels maps to None."""
    masks_dir = getattr(dataset, "masks_dir", None)
    if masks_dir is None or not Path(masks_dir).is_dir():
        return {}
    paths = [Path(masks_dir) / (Path(name).stem + ".png") for name in test_frame["filename"]]
    has_mask = np.array([path.is_file() for path in paths])
    order = np.argsort(test_frame["filename"].to_numpy(), kind="stable")
    auroc, counts = {}, {}
    for c, name in enumerate(classes):
        chosen = [i for i in order if truth[i, c] and has_mask[i]][:MAX_LOCALISATION_IMAGES]
        counts[name] = len(chosen)
        if not chosen:
            auroc[name] = None
            continue
        indices = test_frame["index"].to_numpy()[chosen]
        images = np.stack([test_image(dataset, int(i), image_size) for i in indices])
        maps = class_maps(gradcam, normalize(images, normalization), np.full(len(chosen), c))
        masks = np.stack([lesion_mask(paths[i], dataset.stored_size, image_size)
                          for i in chosen])
        value = saliency_pixel_auroc(maps, masks)
        auroc[name] = None if np.isnan(value) else value
    return {"saliency_pixel_auroc": auroc, "n_saliency_images": counts}


def explain_test_split(gradcam: GradCam, dataset, test_frame: pd.DataFrame, probs: np.ndarray,
                       truth: np.ndarray, predicted: np.ndarray,
                       predicted_class: np.ndarray | None, classes: tuple[str, ...],
                       image_size: int, normalization: str, title: str,
                       grid_path: Path | None) -> dict:
    """The grid (written to grid_path when given) and the localisation metrics of one fold.

    test_frame: the test split's rows (filename, index into the dataset) in the order of
    probs float[N, C], truth and predicted bool[N, C]; see grid_cells for predicted_class.
    """
    if grid_path is not None:
        by_name = np.argsort(test_frame["filename"].to_numpy(), kind="stable")
        cells = grid_cells(truth[by_name], predicted[by_name],
                           None if predicted_class is None else predicted_class[by_name])
        cells = [dataclasses.replace(cell, image=int(by_name[cell.image])) for cell in cells]
        if cells:
            indices = test_frame["index"].to_numpy()[[cell.image for cell in cells]]
            images = np.stack([test_image(dataset, int(i), image_size) for i in indices])
            maps = class_maps(gradcam, normalize(images, normalization),
                              np.array([cell.shown for cell in cells]))
            write_grid(images, maps, cells, classes, probs, title, grid_path)
    return localisation(gradcam, dataset, test_frame, truth, classes, image_size,
                        normalization)
