"""Drawing surface and eye geometry shared by the synthetic anatomy and lesion painters."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHIFT = 4  # cv2 fixed-point bits: coordinates are drawn with 1/16-pixel precision
ONE = 1 << SHIFT


@dataclass(frozen=True)
class Geometry:
    """Where the eye lies in the picture.

    Eye coordinates are in disc diameters (dd) with the fovea at the origin, +x towards the optic
    disc (nasal) and +y down; `to_px` mirrors them so the disc lands on the nasal side of the
    picture: the right of a right eye, the left of a left eye.
    """

    width: int
    height: int
    fovea: tuple[float, float]  # pixels
    dd: float  # disc diameter in pixels
    nasal: int  # +1 when the disc is right of the fovea (right eye), -1 for a left eye
    rotation: float  # radians, clockwise in the picture: head tilt / camera roll
    disc: tuple[float, float]  # eye coordinates of the disc centre
    field_centre: tuple[float, float]  # pixels; the field is the imaged, illuminated retina
    field_axes: tuple[float, float]  # pixels, semi-axes of the field ellipse

    @property
    def rotation_deg(self) -> float:
        """`rotation` in degrees, for cv2 ellipses whose orientation follows the eye."""
        return float(np.degrees(self.rotation))

    def to_px(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) eye coordinates -> (..., 2) float32 pixel coordinates."""
        xy = np.asarray(xy, np.float32)
        cos, sin = np.float32(np.cos(self.rotation)), np.float32(np.sin(self.rotation))
        dx = (self.nasal * self.dd) * xy[..., 0]
        dy = np.float32(self.dd) * xy[..., 1]
        out = np.empty_like(xy)
        out[..., 0] = self.fovea[0] + cos * dx - sin * dy
        out[..., 1] = self.fovea[1] + sin * dx + cos * dy
        return out

    def field_radius_dd(self, angle: float) -> float:
        """Distance in dd from the fovea to the field edge along eye-coordinate `angle` (rad)."""
        (ux, uy), = self.to_px([[np.cos(angle), np.sin(angle)]]) - np.float32(self.fovea)
        ox = (self.fovea[0] - self.field_centre[0]) / self.field_axes[0]
        oy = (self.fovea[1] - self.field_centre[1]) / self.field_axes[1]
        ux, uy = ux / self.field_axes[0], uy / self.field_axes[1]
        # Solve |o + t u| = 1 for the positive root t (in dd, as u is one dd long).
        a, b, c = ux * ux + uy * uy, 2 * (ox * ux + oy * uy), ox * ox + oy * oy - 1
        return float((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))

    def field_mask(self) -> np.ndarray:
        """(H, W) uint8: 255 inside the field ellipse."""
        mask = np.zeros((self.height, self.width), np.uint8)
        cv2.ellipse(mask, fixed(self.field_centre), fixed(self.field_axes), 0, 0, 360, 255, -1,
                    cv2.LINE_AA, SHIFT)
        return mask


def fixed(xy) -> tuple[int, ...]:
    """Pixel coordinates or lengths -> cv2 fixed-point ints (see SHIFT)."""
    return tuple(int(round(v * ONE)) for v in np.ravel(xy))


def fixed_points(xy: np.ndarray) -> np.ndarray:
    """(n, 2) float pixel coordinates -> (n, 2) int32 fixed-point for cv2.polylines/fillPoly."""
    return np.round(np.asarray(xy) * ONE).astype(np.int32)


class Canvas:
    """An RGB picture `rgb` (H, W, 3) float32 in [0, 1] and its lesion `mask` (H, W) uint8.

    Shapes are drawn with cv2 into uint8 layers (H, W) and then blended over the picture
    inside their bounding box only, which keeps small lesions cheap.
    """

    def __init__(self, height: int, width: int):
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.mask = np.zeros((height, width), np.uint8)

    def layer(self) -> np.ndarray:
        """A blank (H, W) uint8 layer to draw a shape into (255 = fully inside)."""
        return np.zeros(self.mask.shape, np.uint8)

    def _blend(self, shape, opacity, blur, lesion, target, multiply) -> None:
        """Moves each pixel towards RGB `target` by alpha = shape/255 * opacity (blurred);
        with `multiply`, scales it by 1 + alpha * (target - 1) instead."""
        x, y, w, h = cv2.boundingRect(shape)
        if w == 0 or h == 0:
            return
        pad = int(3 * blur) + 1
        height, width = shape.shape
        region = (slice(max(y - pad, 0), min(y + h + pad, height)),
                  slice(max(x - pad, 0), min(x + w + pad, width)))
        roi = shape[region]
        if lesion:
            self.mask[region][roi > 0] = 255
        scale = np.float32(opacity / 255)
        if blur == 0:
            # Thin shapes (vessels, dots) cover a small part of their box: touch only those
            # pixels, addressed in the contiguous band of rows that holds the box.
            band = self.rgb[region[0]].reshape(-1, 3)
            shape_band = shape[region[0]].reshape(-1)
            index = np.flatnonzero(shape_band)
            if len(index) < band.shape[0] // 3:
                pixels = np.take(band, index, axis=0)
                self._apply(pixels, np.take(shape_band, index) * scale, target, multiply)
                band[index] = pixels
                return
            alpha = roi.astype(np.float32) * scale
        else:
            alpha = _blur(roi.astype(np.float32) * scale, blur)
        self._apply(self.rgb[region], alpha, target, multiply)

    @staticmethod
    def _apply(pixels, alpha, target, multiply) -> None:
        # Channel by channel: numpy is several times slower broadcasting over a length-3 axis.
        for k, value in enumerate(np.asarray(target, np.float32).tolist()):
            channel = pixels[..., k]
            if multiply:
                channel *= 1 + alpha * np.float32(value - 1)
            else:
                channel += alpha * (np.float32(value) - channel)

    def paint(self, shape, colour, opacity=1.0, blur=0.0, lesion=False) -> None:
        """Blends RGB `colour` over the picture where `shape` is drawn; `lesion` marks the mask."""
        self._blend(shape, opacity, blur, lesion, colour, multiply=False)

    def shade(self, shape, gains, opacity=1.0, blur=0.0, lesion=False) -> None:
        """Multiplies the picture by RGB `gains` where `shape` is drawn (darkening/tinting)."""
        self._blend(shape, opacity, blur, lesion, gains, multiply=True)

    def scale(self, factor: np.ndarray) -> None:
        """Multiplies every channel by the (H, W) float32 `factor` (vignetting, field masks)."""
        for k in range(3):
            self.rgb[..., k] *= factor

    def scale_channels(self, gains) -> None:
        """Multiplies each channel by its own gain (exposure and colour balance)."""
        for k, gain in enumerate(np.asarray(gains, np.float32).tolist()):
            self.rgb[..., k] *= np.float32(gain)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D float32 image; wide blurs run on a downsampled copy (same look,
    a fraction of the cost)."""
    factor = int(sigma // 2)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape
    small = cv2.resize(image, (max(w // factor, 1), max(h // factor, 1)),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """(H, W) float32 smooth noise, roughly unit variance, with `cells` blobs across the width."""
    grid_w = max(cells, 2)
    grid_h = max(int(round(cells * height / width)), 2)
    grid = rng.standard_normal((grid_h + 2, grid_w + 2), dtype=np.float32)
    # Resize with a margin so the bicubic edges don't flatten out.
    big = cv2.resize(grid, (width * (grid_w + 2) // grid_w, height * (grid_h + 2) // grid_h),
                     interpolation=cv2.INTER_CUBIC)
    oy, ox = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return big[oy : oy + height, ox : ox + width]


def draw_polylines(layer, lines_px, widths_px, value=255) -> None:
    """Draws open polylines (list of (n, 2) pixel arrays) with per-line widths (pixels).

    Sub-pixel widths are drawn one pixel wide at reduced intensity.
    """
    if not lines_px:
        return
    widths = np.asarray(widths_px, np.float32)
    thickness = np.maximum(np.round(widths), 1).astype(int)
    # Sixteen intensity levels keep the number of cv2 calls (one per style) small.
    intensity = (value * np.round(np.minimum(widths, 1.0) * 16) / 16).astype(int)
    # One fixed-point conversion for all lines, then one cv2 call per (thickness, intensity).
    ends = np.cumsum([len(line) for line in lines_px]).tolist()
    points = fixed_points(np.concatenate(lines_px))
    lines = [points[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    by_style: dict[tuple[int, int], list[np.ndarray]] = {}
    for line, t, i in zip(lines, thickness.tolist(), intensity.tolist(), strict=True):
        if i > 0:
            by_style.setdefault((t, i), []).append(line)
    for (t, i), group in by_style.items():
        cv2.polylines(layer, group, False, i, t, cv2.LINE_AA, SHIFT)


def draw_discs(layer, centres_px, radii_px, value=255) -> None:
    """Draws filled circles; radii below half a pixel become fainter single-pixel dots."""
    for (x, y), r in zip(centres_px, radii_px, strict=True):
        intensity = int(value * min(1.0, r * 2))
        cv2.circle(layer, fixed((x, y)), int(round(max(r, 0.5) * ONE)), intensity, -1,
                   cv2.LINE_AA, SHIFT)


def draw_ellipses(layer, centres_px, axes_px, angles_deg, value=255) -> None:
    """Draws filled ellipses (semi-axes in pixels, rotation in degrees)."""
    for (x, y), (a, b), angle in zip(centres_px, axes_px, angles_deg, strict=True):
        cv2.ellipse(layer, fixed((x, y)), fixed((max(a, 0.5), max(b, 0.5))), float(angle), 0,
                    360, value, -1, cv2.LINE_AA, SHIFT)
