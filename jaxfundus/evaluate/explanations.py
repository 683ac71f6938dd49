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
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxfundus.data.pipeline import normalize
from jaxfundus.evaluate.reconstructions import _image as test_image
from jaxfundus.evaluate.reconstructions import _mask as lesion_mask
from jaxfundus.evaluate.saliency import GradCam, overlay, saliency_pixel_auroc

EXAMPLES_PER_CELL = 2  # correct and wrong test images shown per class
MAX_LOCALISATION_IMAGES = 32  # per class: bounds the Grad-CAM work of a fold
CHUNK = 16  # images per Grad-CAM call; fixed so every call has the shape of the first


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
    maps; images uint8[M, S, S, 3] and maps float32[M, S, S] in the order of `cells`."""
    rows = sorted({cell.row for cell in cells})
    columns = 2 * EXAMPLES_PER_CELL
    figure = Figure(figsize=(1.45 * columns, 1.6 * len(rows) + 0.4), dpi=90,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    filled: dict[tuple[int, bool], int] = {}
    for k, cell in enumerate(cells):
        r = rows.index(cell.row)
        n = filled.get((cell.row, cell.correct), 0)
        filled[(cell.row, cell.correct)] = n + 1
        ax = axes[r, n + (0 if cell.correct else EXAMPLES_PER_CELL)]
        ax.imshow(overlay(images[k], maps[k]))
        verdict = "right" if cell.correct else "wrong"
        ax.set_title(f"{classes[cell.row]}, {verdict}\nmap: {classes[cell.shown]} "
                     f"p={probs[cell.image, cell.shown]:.2f}", fontsize=6.5)
    for r, row in enumerate(rows):  # say so where a class has no right (or no wrong) image
        for correct, column in ((True, 0), (False, EXAMPLES_PER_CELL)):
            if (row, correct) not in filled:
                axes[r, column].text(0.5, 0.5, f"{classes[row]}:\nnone "
                                     f"{'right' if correct else 'wrong'}", ha="center",
                                     va="center", fontsize=7, color="grey")
    figure.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


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
