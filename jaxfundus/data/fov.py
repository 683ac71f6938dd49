"""Field of view of a fundus photograph: find the round retina on its black surround, crop to it.

A colour fundus camera images the retina as a bright disc (sometimes clipped at the top and
bottom) on black, placed and sized differently by each camera; letterboxing such a photograph
as it is wastes much of the stored square on black. `detect_fov` finds the field of view:

1. luminance (ITU-R 601) on a copy whose long side is at most `WORK_SIZE` px (the box needs
   no finer detail), smoothed with a median filter: JPEG noise and dust specks vanish while
   the field's edge stays where it is (a Gaussian would spread it outwards);
2. a threshold a little above black (`BLACK_LEVEL`, or a tenth of the bright end of the image
   when that is higher), the largest 8-connected component, its holes filled;
3. the component's bounding box, widened by `MARGIN` of its size on every side (at least one
   pixel of the reduced copy, so the box never cuts into the retina).

Ultra-widefield (Optos) images have no disc: the retina fills the frame. They are recognised,
not assumed, from the field itself and left as they are: a field that covers most of the
frame's edge (`MAX_BORDER_FRACTION`), or whose edge away from the frame is not a circle
(`MAX_CIRCLE_DEVIATION` of the radius, root mean square), is kept whole. Images without a
usable field (black, or a field smaller than `MIN_FIELD_FRACTION` of the image) raise
`FieldOfViewError`, which the dataset builder reports as a bad row.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

CROP_MODES = ("none", "fov")  # `invoke data --crop`
CROP, KEEP = "crop", "keep"  # what to do with an image
WORK_SIZE = 256  # detection runs on a copy whose long side is at most this (px)
SMOOTHING = 0.02  # median filter width as a fraction of the working image's long side
BLACK_LEVEL = 12.0  # smoothed luminance (0-255) above which a pixel may be retina
RELATIVE_LEVEL = 0.1  # ... and above this fraction of the 99th percentile of the luminance
MIN_FIELD_FRACTION = 0.01  # a smaller field is too small to train on (a bad row)
MAX_BORDER_FRACTION = 0.5  # a field over more of the frame's edge is ultra-widefield
MAX_CIRCLE_DEVIATION = 0.06  # rms distance of the free edge from its fitted circle / radius
MIN_FREE_EDGE = 0.25  # fraction of the field's outline away from the frame needed for a fit
MARGIN = 0.02  # the crop box's margin around the field, as a fraction of the field's size


class FieldOfViewError(ValueError):
    """A photograph without a usable field of view; the message says why (one line)."""


@dataclasses.dataclass(frozen=True)
class FieldOfView:
    """What `detect_fov` decided for one image of shape `shape` (height, width).

    `action` is CROP (a round field: crop to `box`) or KEEP (no disc: the whole image);
    `box` is (top, left, bottom, right) in pixels of that image, bottom/right exclusive (the
    whole image when kept); `reason` says why in words; `field_fraction` and
    `border_fraction` are the shares of the image and of its edge inside the field.
    """

    action: str
    box: tuple[int, int, int, int]
    shape: tuple[int, int]
    reason: str
    field_fraction: float
    border_fraction: float

    def scaled_to(self, shape: tuple[int, int]) -> FieldOfView:
        """The same decision for the same photograph decoded at another size (height, width):
        the box grows outwards to whole pixels, so it never loses retina."""
        (height, width), (old_h, old_w) = shape, self.shape
        top, left, bottom, right = self.box
        box = (int(np.floor(top * height / old_h)), int(np.floor(left * width / old_w)),
               min(height, int(np.ceil(bottom * height / old_h))),
               min(width, int(np.ceil(right * width / old_w))))
        return dataclasses.replace(self, box=box, shape=(height, width))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """uint8[H, W, 3] (this photograph at any decoded size) -> the field's box of it."""
        top, left, bottom, right = self.scaled_to(image.shape[:2]).box
        return image[top:bottom, left:right]

    def describe(self) -> str:
        """One line, e.g. "cropped to rows 10-990, columns 200-1180 of 1000x1400 (...)"."""
        return describe(self.action, self.box, self.shape, self.reason)


def describe(action: str, box: tuple[int, int, int, int], shape: tuple[int, int],
             reason: str) -> str:
    """A field-of-view decision in one line (as printed by `invoke data --crop=fov`)."""
    height, width = shape
    if action == KEEP:
        return f"kept whole ({height}x{width}): {reason}"
    top, left, bottom, right = box
    return f"cropped to rows {top}-{bottom}, columns {left}-{right} of {height}x{width} ({reason})"


def detect_fov(image: np.ndarray) -> FieldOfView:
    """The field of view of an RGB photograph uint8[H, W, 3] and what to do with it.

    Raises FieldOfViewError for an image that is black or whose field is tiny.
    """
    height, width = image.shape[:2]
    scale = min(1.0, WORK_SIZE / max(height, width))
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA)
    luminance = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)  # ITU-R 601
    width_px = 2 * round(SMOOTHING * max(small.shape[:2]) / 2) + 1  # odd, as cv2 needs
    luminance = cv2.medianBlur(luminance, width_px) if width_px >= 3 else luminance
    brightest = float(luminance.max())
    if brightest <= BLACK_LEVEL:
        raise FieldOfViewError(f"image is black (brightest smoothed luminance "
                               f"{brightest:.1f} of 255): no field of view")
    level = max(BLACK_LEVEL, RELATIVE_LEVEL * float(np.percentile(luminance, 99)))
    field = _largest_component(luminance > level)
    field_fraction = float(field.mean())
    if field_fraction < MIN_FIELD_FRACTION:
        raise FieldOfViewError(f"field of view covers {field_fraction:.2%} of the image "
                               f"(under {MIN_FIELD_FRACTION:.0%}): too small to use")
    border = np.concatenate([field[0], field[-1], field[1:-1, 0], field[1:-1, -1]])
    border_fraction = float(border.mean())
    whole = (0, 0, height, width)

    def decision(action, box, reason):
        return FieldOfView(action, box, (height, width), reason, round(field_fraction, 4),
                           round(border_fraction, 4))

    if border_fraction > MAX_BORDER_FRACTION:
        return decision(KEEP, whole, f"the field covers {border_fraction:.0%} of the frame's "
                                     "edge: ultra-widefield image, no disc to crop to")
    deviation = _circle_deviation(field)
    if deviation is None:
        return decision(KEEP, whole, "too little of the field's edge lies inside the frame to "
                                     "tell a disc: no disc to crop to")
    if deviation > MAX_CIRCLE_DEVIATION:
        return decision(KEEP, whole, f"the field's edge is not round (off a circle by "
                                     f"{deviation:.1%} of its radius): no disc to crop to")
    return decision(CROP, _box(field, scale, height, width),
                    f"round field, off a circle by {deviation:.1%} of its radius, "
                    f"{field_fraction:.0%} of the image")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """bool[h, w] -> the largest 8-connected component of `mask`, holes filled."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count < 2:
        return np.zeros_like(mask, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = (labels == largest).astype(np.uint8)
    # Dark structures inside the retina (vessels, haemorrhages, a dark fovea) are field too.
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def _circle_deviation(field: np.ndarray) -> float | None:
    """Root mean square distance of the field's outline, where it runs inside the frame, from
    the circle fitted to it (least squares, Kasa), relative to that circle's radius; None when
    too little of the outline runs inside the frame to fit."""
    contours, _ = cv2.findContours(field.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([c[:, 0, :] for c in contours]).astype(np.float64)  # (x, y)
    height, width = field.shape
    inside = ((points[:, 0] > 1) & (points[:, 0] < width - 2)
              & (points[:, 1] > 1) & (points[:, 1] < height - 2))
    if inside.mean() < MIN_FREE_EDGE or inside.sum() < 16:
        return None
    x, y = points[inside, 0], points[inside, 1]
    # x^2 + y^2 = 2 a x + 2 b y + c, linear in (a, b, c); r^2 = c + a^2 + b^2.
    design = np.stack([2 * x, 2 * y, np.ones_like(x)], 1)
    (a, b, c), *_ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    radius = np.sqrt(max(c + a * a + b * b, 1e-12))
    distances = np.hypot(x - a, y - b) - radius
    return float(np.sqrt(np.mean(distances ** 2)) / radius)


def _box(field: np.ndarray, scale: float, height: int, width: int) -> tuple[int, int, int, int]:
    """The field's bounding box plus MARGIN, in pixels of the original image (clipped to it)."""
    rows, columns = np.flatnonzero(field.any(1)), np.flatnonzero(field.any(0))
    top, bottom = rows[0] / scale, (rows[-1] + 1) / scale
    left, right = columns[0] / scale, (columns[-1] + 1) / scale
    # At least one working pixel, the most the reduced copy can misplace the edge by.
    grow_y, grow_x = (max(MARGIN * (bottom - top), 1 / scale),
                      max(MARGIN * (right - left), 1 / scale))
    return (max(0, int(np.floor(top - grow_y))), max(0, int(np.floor(left - grow_x))),
            min(height, int(np.ceil(bottom + grow_y))), min(width, int(np.ceil(right + grow_x))))
