"""Synthetic anomalies for any normal fundus photograph: disease lesion stamps and DRAEM textures.

The input is a photograph as the TFDS builder stores it and the pipeline resizes it: uint8[S,S,3],
letterboxed with black bars, any S, colour-fundus or Optos style. Nothing here needs the
generator's anatomy: the field of view is found from the pixels (the non-black region), lesion
sizes follow its size, and each lesion's colour is derived from the local colour of the retina
under it (a haemorrhage darkens and reddens it, an exudate screens it towards yellow), so the same
stamps serve a green-yellow Optos image and an orange colour photograph.

Every painter returns `(image uint8[S,S,3], mask bool[S,S])` where `mask` is exactly the set of
pixels whose value changed, and every changed pixel lies inside the field of view. All randomness
comes from the numpy Generator passed in, so a seed fixes the output.

Stamps by disease (the generator's painters in `jaxfundus.synthetic.lesions`, re-drawn
around a random "posterior pole" instead of the anatomy's fovea, disc and vessels):
  AMD  drusen and pigment clumps, with geographic atrophy or subretinal blood in some eyes
  RVO  flame haemorrhages fanning out in one sector from an occlusion point, cotton-wool spots
  MH   a round dark-red hole in a pale cuff, with a few yellow deposits
  DR   microaneurysms and dot/blot haemorrhages, sometimes cotton-wool spots
  RD   a paler, greyer region from the field edge on one side, with folds along its border
  RP   bone-spicule pigment and mottling over the mid-peripheral ring of the field
  AO   a pale oedematous area with a cherry-red spot in its middle
  DM   hard exudates in circinate rings and scattered clusters
`UNSTAMPED` says which diseases have no stamp and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from jaxfundus.synthetic.canvas import (
    draw_discs,
    draw_ellipses,
    draw_polylines,
    smooth_noise,
)

# A pixel belongs to the field of view when its brightest channel exceeds this (of 255): the
# letterbox bars are exactly 0, JPEG noise and Optos' darkest vignetting stay below it.
FOV_THRESHOLD = 12
# Lesion opacity below this is cut to zero: the faint tail of a blurred shape would otherwise
# change pixels by a grey level or two, marking invisible halos as anomalous.
ALPHA_FLOOR = 0.12
# The generator's disc diameter is about 0.14 (Optos) to 0.28 (colour) of the field's
# equivalent radius; each picture draws its own in this range.
DD_PER_RADIUS = (0.13, 0.3)
# Perlin cells at least this many pixels wide (DRAEM: up to 32 cells across 256 px).
MIN_PERLIN_CELL = 8
PERLIN_THRESHOLD = 0.5  # DRAEM's
MAX_TEXTURE_OPACITY = 0.8  # DRAEM's beta ~ U(0, 0.8): the image's share inside the mask
# A structural change must move some channel by at least this many grey levels (of 255) at a
# pixel to count there: a warp shifts smooth background by a level or two, which no reader
# would call a lesion, and such pixels are left as they were.
STRUCTURE_TOLERANCE = 6
# Local magnification of a warp: shrink to half or swell to twice the size, never less than
# MIN_MAGNIFICATION away from 1 (the radial profile below stays monotonic over this range).
MAGNIFICATION = (0.5, 2.0)
MIN_MAGNIFICATION = 1.3

UNSTAMPED = {
    "Gla": "glaucoma changes existing structures (a larger cup, a paler disc, atrophy at the "
           "disc border), which needs the optic disc's location",
}


def _multiply(gains) -> Callable[[np.ndarray], np.ndarray]:
    """A material that scales the local colour per channel (blood, pigment: darker)."""
    gains = np.float32(gains)
    return lambda local: local * gains


def _screen(colour) -> Callable[[np.ndarray], np.ndarray]:
    """A material that screens the local colour towards `colour` (exudates, drusen: lighter)."""
    colour = np.float32(colour)
    return lambda local: 1 - (1 - local) * (1 - colour)


def _greyer(lift: float) -> Callable[[np.ndarray], np.ndarray]:
    """Detached retina: the local colour desaturated towards its grey, lifted by `lift`."""
    def material(local: np.ndarray) -> np.ndarray:
        grey = local.mean(-1, keepdims=True) + np.float32(lift)
        return np.minimum(0.3 * local + 0.7 * grey, 1.0)
    return material


MATERIALS = {
    "blood": _multiply((0.50, 0.20, 0.17)),
    "hole": _multiply((0.72, 0.32, 0.28)),
    "pigment": _multiply((0.22, 0.18, 0.15)),
    "cherry": _multiply((1.0, 0.45, 0.40)),
    "fold_dark": _multiply((0.62, 0.60, 0.58)),
    "mottling": _multiply((0.75, 0.72, 0.70)),
    "exudate": _screen((0.95, 0.85, 0.30)),
    "drusen": _screen((0.75, 0.65, 0.30)),
    "cotton_wool": _screen((0.75, 0.75, 0.62)),
    "atrophy": _screen((0.70, 0.55, 0.35)),
    "ischaemic": _screen((0.55, 0.55, 0.45)),
    "cuff": _screen((0.45, 0.40, 0.25)),
    "fold_light": _screen((0.40, 0.40, 0.35)),
    "detached": _greyer(0.12),
}


def field_of_view(image: np.ndarray) -> np.ndarray:
    """uint8[S,S,3] -> bool[S,S]: the non-black region, holes filled, specks dropped.

    Dark lesions or vessels inside the field are filled in (outer contours only); blobs under
    1% of the frame (noise in the black surround) are dropped. A frame without any such region
    (an all-black, failed capture) counts as field everywhere, so a training pipeline never
    stops on one bad photograph.
    """
    bright = (_channel_max(image) > FOV_THRESHOLD).astype(np.uint8)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_area = 0.01 * bright.size
    large = [c for c in contours if cv2.contourArea(c) >= min_area]
    if not large:
        return np.ones(bright.shape, bool)
    fov = np.zeros_like(bright)
    cv2.drawContours(fov, large, -1, 1, cv2.FILLED)
    return fov.astype(bool)


def _channel_max(image: np.ndarray) -> np.ndarray:
    """uint8[H,W,3] -> uint8[H,W]; numpy reduces a length-3 last axis several times slower."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Two uint8[H,W,3] pictures -> bool[H,W], True where any channel differs."""
    return _channel_max(before ^ after) > 0


class Retina:
    """A photograph being painted: float32 copy, field of view, local colour and a size unit.

    `rgb` float32[S,S,3] in [0, 1]; `fov` bool[S,S]; `inner` bool[S,S], the field shrunk by a
    margin, where lesion centres go; `local` float32[S,S,3], the mean colour of the field around
    each pixel; `centre` (x, y) px and `radius` px, the field's centroid and equivalent radius;
    `dd` px, a disc diameter for this picture (lesion sizes are in dd as in the generator);
    `pole` (x, y) px, a random point near the middle of the field around which posterior-pole
    lesions cluster.
    """

    def __init__(self, image: np.ndarray, rng: np.random.Generator):
        self.image = image
        self.rgb = image.astype(np.float32) / np.float32(255)
        self.fov = field_of_view(image)
        ys, xs = np.nonzero(self.fov)
        self.centre = np.float32([xs.mean(), ys.mean()])
        self.radius = float(np.sqrt(len(xs) / np.pi))
        self.dd = self.radius * rng.uniform(*DD_PER_RADIUS)
        margin = max(int(round(0.04 * self.radius)), 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2)
        self.inner = cv2.erode(self.fov.astype(np.uint8), kernel).astype(bool)
        if not self.inner.any():
            self.inner = self.fov
        # Mean colour of the field only: the black surround must not darken the field's rim.
        sigma = max(0.1 * self.radius, 1.0)
        weight = self.fov.astype(np.float32)
        total = cv2.GaussianBlur(self.rgb * weight[..., None], (0, 0), sigma)
        norm = cv2.GaussianBlur(weight, (0, 0), sigma)
        self.local = total / np.maximum(norm, 1e-3)[..., None]
        self.pole = self.inside(self.centre + rng.normal(0, 0.25 * self.radius, (1, 2)), rng)[0]

    def salient(self) -> np.ndarray:
        """(x, y) px: the brightest spot of the picture smoothed at a quarter disc diameter,
        inside `inner`; on a fundus photograph usually the optic disc."""
        sigma = max(0.25 * self.dd, 0.5)
        brightness = cv2.GaussianBlur(self.rgb.mean(-1), (0, 0), sigma)
        y, x = np.unravel_index(np.argmax(np.where(self.inner, brightness, -1.0)),
                                brightness.shape)
        return np.float32([x, y])

    def random_point(self, rng: np.random.Generator) -> np.ndarray:
        """(x, y) px: a pixel of `inner` drawn uniformly."""
        ys, xs = np.nonzero(self.inner)
        pick = int(rng.integers(len(xs)))
        return np.float32([xs[pick], ys[pick]])

    def layer(self) -> np.ndarray:
        """A blank uint8[S,S] layer to draw a shape into (255 = fully inside)."""
        return np.zeros(self.fov.shape, np.uint8)

    def within(self, points: np.ndarray) -> np.ndarray:
        """(n, 2) px -> bool[n]: which points fall inside `inner`."""
        points = np.asarray(points, np.float32).reshape(-1, 2)
        h, w = self.inner.shape
        xy = np.round(points).astype(int)
        ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        ok[ok] = self.inner[xy[ok, 1], xy[ok, 0]]
        return ok

    def inside(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, 2) px -> float32 (m, 2), the points inside `inner`; at least one (a random inner
        pixel when none is), so every stamp draws something."""
        points = np.asarray(points, np.float32).reshape(-1, 2)
        ok = self.within(points)
        if ok.any():
            return points[ok]
        return self.random_point(rng)[None]

    def paint(self, shape: np.ndarray, material: str, opacity: float, blur: float = 0.0) -> None:
        """Moves pixels towards MATERIALS[material](local colour) by alpha = shape/255 * opacity
        (Gaussian-blurred by `blur` px), only inside the field and where alpha >= ALPHA_FLOOR."""
        x, y, w, h = cv2.boundingRect(shape)
        if w == 0 or h == 0:
            return
        pad = int(3 * blur) + 1
        height, width = shape.shape
        region = (slice(max(y - pad, 0), min(y + h + pad, height)),
                  slice(max(x - pad, 0), min(x + w + pad, width)))
        alpha = shape[region].astype(np.float32) * np.float32(opacity / 255)
        if blur >= 0.3:
            alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
        alpha *= self.fov[region]
        alpha[alpha < ALPHA_FLOOR] = 0
        pixels = self.rgb[region]
        pixels += alpha[..., None] * (MATERIALS[material](self.local[region]) - pixels)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8[S,S,3], mask bool[S,S]: exactly the pixels whose value changed)."""
        out = np.clip(np.rint(self.rgb * 255), 0, 255).astype(np.uint8)
        return out, changed_pixels(self.image, out)


def _severity(rng: np.random.Generator) -> float:
    """Lesion severity as the generator draws it per eye: about 0.25-1.25, some cases subtle."""
    return float(0.25 + rng.beta(2.2, 1.6))


def _count(base: float, s: float) -> int:
    return max(int(round(base * s)), 1)


def _opacity(s: float) -> float:
    return float(np.clip(0.3 + 0.7 * s, 0.0, 1.0))


def _size(s: float) -> float:
    return float(0.6 + 0.4 * min(s, 1.5))


def _radii(retina: Retina, low: float, high: float, n: int, rng, s: float = 1.0) -> np.ndarray:
    """n radii (px) uniform in [low, high] dd, times the severity's size, at least half a pixel
    so that small lesions stay visible at 64 px."""
    return np.maximum(rng.uniform(low, high, n) * _size(s) * retina.dd, 0.5)


def _cotton_wool(retina: Retina, rng, around: np.ndarray, spread: float, n: int) -> None:
    """Fluffy pale nerve-fibre infarcts within `spread` dd of `around`."""
    centres = retina.inside(around + rng.normal(0, spread * retina.dd, (n, 2)), rng)
    n = len(centres)
    shape = retina.layer()
    draw_ellipses(shape, centres, np.maximum(rng.uniform(0.1, 0.25, (n, 2)) * retina.dd, 0.7),
                  rng.uniform(0, 180, n))
    retina.paint(shape, "cotton_wool", 0.75, blur=0.08 * retina.dd)


def stamp_dr(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """Diabetic retinopathy: microaneurysms and dot/blot haemorrhages around the pole."""
    dd = retina.dd
    micro = retina.inside(retina.pole + rng.normal(0, 2.2 * dd, (_count(45, s), 2)), rng)
    blots = retina.inside(retina.pole + rng.normal(0, 2.4 * dd, (_count(24, s), 2)), rng)
    shape = retina.layer()
    draw_discs(shape, micro, np.full(len(micro), max(0.035 * dd, 0.5)))
    draw_ellipses(shape, blots, np.maximum(rng.uniform(0.05, 0.18, (len(blots), 2))
                                           * _size(s) * dd, 0.5), rng.uniform(0, 180, len(blots)))
    retina.paint(shape, "blood", _opacity(s), blur=0.02 * dd)
    if rng.random() < 0.5 * s:
        _cotton_wool(retina, rng, retina.pole, 2.0, int(rng.integers(1, 4)))


def stamp_dm(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """Diabetic macular oedema: hard exudates in circinate rings and clusters near the pole."""
    dd = retina.dd
    dots = []
    for _ in range(1 + int(s > 0.6) + int(rng.random() < 0.3)):
        ring_centre = retina.pole + rng.normal(0, 0.5 * dd, 2)
        ring_radius = rng.uniform(0.4, 0.9) * _size(s) * dd
        start, span = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi, 2 * np.pi)
        n = _count(30, s)
        angle = start + rng.uniform(0, span, n)
        radius = ring_radius * rng.normal(1, 0.12, n)
        dots.append(ring_centre + np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None])
    dots.append(retina.pole + rng.normal(0, 1.1 * dd, (_count(15, s), 2)))
    dots = retina.inside(np.concatenate(dots), rng)
    shape = retina.layer()
    draw_discs(shape, dots, _radii(retina, 0.025, 0.07, len(dots), rng, s))
    retina.paint(shape, "exudate", _opacity(s), blur=0.015 * dd)


def stamp_amd(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """AMD: drusen and pigment clumps at the pole; some eyes atrophic or neovascular."""
    dd = retina.dd
    centre = retina.pole + rng.normal(0, 0.15 * dd, 2)
    subtype = rng.random()
    if subtype < 0.55:
        # Geographic atrophy (sharp pale patch) or neovascular AMD (subretinal blood).
        atrophic = subtype < 0.3
        radius = rng.uniform(0.35, 0.8) * _size(s) * dd
        where = centre if atrophic else centre + rng.normal(0, 0.3 * dd, 2)
        shape = retina.layer()
        draw_ellipses(shape, retina.inside(where, rng)[:1],
                      [[radius, radius * rng.uniform(0.6, 1)]], [rng.uniform(0, 180)])
        if atrophic:
            retina.paint(shape, "atrophy", 0.75 * _opacity(s), blur=0.02 * dd)
        else:
            retina.paint(shape, "blood", 0.85 * _opacity(s), blur=0.06 * dd)
    drusen = retina.inside(centre + np.clip(rng.normal(0, 0.65, (_count(90, s), 2)), -1.8, 1.8)
                           * dd, rng)
    shape = retina.layer()
    draw_discs(shape, drusen, _radii(retina, 0.03, 0.11, len(drusen), rng, s))
    retina.paint(shape, "drusen", 0.9 * _opacity(s), blur=0.03 * dd)
    pigment = retina.inside(centre + rng.normal(0, 0.5 * dd, (_count(9, s), 2)), rng)
    shape = retina.layer()
    draw_ellipses(shape, pigment, np.maximum(rng.uniform(0.03, 0.08, (len(pigment), 2)) * dd, 0.5),
                  rng.uniform(0, 180, len(pigment)))
    retina.paint(shape, "pigment", 0.8 * _opacity(s))


def stamp_rvo(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """Branch RVO: flame haemorrhages fanning out in one sector from an occlusion point.

    Flames follow the nerve fibres, which run roughly radially away from the occlusion here;
    blood is densest near it and thins out peripherally, as in the generator.
    """
    dd = retina.dd
    origin = retina.inside(retina.pole + rng.normal(0, 1.0 * dd, 2), rng)[0]
    heading = rng.uniform(0, 2 * np.pi)
    n = _count(170, s)
    distance = 0.3 * dd + rng.exponential(1.6 * dd, n)
    direction = heading + rng.normal(0, 0.35, n)
    unit = np.stack([np.cos(direction), np.sin(direction)], 1)
    centres = origin + unit * distance[:, None] + rng.normal(0, 0.08 * dd, (n, 2))
    axes = np.stack([rng.uniform(0.1, 0.32, n) * _size(s), rng.uniform(0.03, 0.07, n)], 1) * dd
    angles = np.degrees(direction) + rng.normal(0, 15, n)
    keep = retina.within(centres)
    if not keep.any():  # the fan points out of the field: one flame at the occlusion
        centres[0], keep[0] = origin, True
    shape = retina.layer()
    draw_ellipses(shape, centres[keep], np.maximum(axes[keep], 0.5), angles[keep])
    retina.paint(shape, "blood", _opacity(s), blur=0.02 * dd)
    if rng.random() < 0.5 * s:
        _cotton_wool(retina, rng, origin, 1.5, int(rng.integers(1, 3)))


def stamp_mh(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """Macular hole: a round, sharply bordered dark-red hole in a pale cuff."""
    centre = retina.inside(retina.pole + rng.normal(0, 0.3 * retina.dd, 2), rng)[:1]
    radius = max(rng.uniform(0.38, 0.5) * _size(s) * retina.dd, 0.7)
    shape = retina.layer()
    draw_discs(shape, centre, [2.1 * radius])
    retina.paint(shape, "cuff", 0.75 * _opacity(s), blur=0.2 * radius)
    shape = retina.layer()
    draw_discs(shape, centre, [radius])
    retina.paint(shape, "hole", 0.5 + 0.45 * min(s, 1.0))
    n = int(rng.integers(3, 9))
    shape = retina.layer()
    draw_discs(shape, centre + rng.uniform(-0.4, 0.4, (n, 2)) * radius,
               np.full(n, max(0.05 * radius, 0.5)))
    retina.paint(shape, "exudate", 0.8)


def stamp_rd(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """Retinal detachment: a greyer, lighter region from the field edge on one side, with folds.

    The region is where the distance along a random direction (in field radii) exceeds a border
    that bends back at the ends and wobbles; folds are light and dark ridges parallel to it.
    """
    h, w = retina.fov.shape
    heading = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (xs - retina.centre[0]) / retina.radius, (ys - retina.centre[1]) / retina.radius
    along = dx * np.float32(np.cos(heading)) + dy * np.float32(np.sin(heading))
    across = -dx * np.float32(np.sin(heading)) + dy * np.float32(np.cos(heading))
    start = (0.75 - 0.5 * min(s, 1.2)) * rng.uniform(0.9, 1.1)
    phase, bend = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.8)
    beyond = along - (start + bend * across**2 + 0.04 * np.sin(5 * across + phase))
    soft = 2.0 / retina.radius  # a border two pixels wide
    region = np.clip(beyond / soft + 0.5, 0, 1)
    retina.paint((255 * region).astype(np.uint8), "detached", 0.2 + 0.6 * min(s, 1.0),
                 blur=0.1 * retina.dd)
    width = max(0.06 * retina.dd / retina.radius, 0.8 / retina.radius)
    for k, material in enumerate(("fold_light", "fold_dark") * 3):
        offset = 0.08 * (k // 2 + 1) + 0.03 * (k % 2)
        wobble = 0.03 * np.sin(across * rng.uniform(8, 14) + rng.uniform(0, 6))
        ridge = np.clip(1 - np.abs(beyond - offset - wobble) / width, 0, 1) * region
        retina.paint((255 * ridge).astype(np.uint8), material, 0.55 * _opacity(s),
                     blur=0.04 * retina.dd)


def stamp_rp(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """RP: black bone-spicule pigment and mottling over the mid-peripheral ring of the field."""
    dd, radius = retina.dd, retina.radius
    annulus_dd2 = np.pi * (0.95**2 - 0.4**2) * (radius / dd) ** 2
    n = min(_count(2.0 * annulus_dd2, s**1.5), 400)
    angle = rng.uniform(0, 2 * np.pi, n)
    distance = radius * np.sqrt(rng.uniform(0.4**2, 0.95**2, n))
    centres = retina.inside(retina.centre + distance[:, None]
                            * np.stack([np.cos(angle), np.sin(angle)], 1), rng)
    # Each spicule: 2-4 bent arms radiating from its centre.
    centres = np.repeat(centres, rng.integers(2, 5, len(centres)), axis=0)
    m = len(centres)
    heading, turn = rng.uniform(0, 2 * np.pi, m), rng.normal(0, 0.6, m)
    half = 0.5 * rng.uniform(0.06, 0.2, m)[:, None] * dd
    mid = centres + half * np.stack([np.cos(heading), np.sin(heading)], 1)
    tip = mid + half * np.stack([np.cos(heading + turn), np.sin(heading + turn)], 1)
    shape = retina.layer()
    draw_polylines(shape, list(np.stack([centres, mid, tip], 1)),
                   np.full(m, max(0.035 * dd, 0.8)))
    retina.paint(shape, "pigment", 0.9 * _opacity(s))
    # Patchy pigment-epithelium mottling over the same ring.
    h, w = retina.fov.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ring = np.hypot(xs - retina.centre[0], ys - retina.centre[1]) / radius
    ring = np.clip(1 - np.abs(ring - 0.68) / 0.3, 0, 1)
    patches = np.clip(smooth_noise(rng, h, w, 12), 0, 1)
    retina.paint((255 * ring * patches).astype(np.uint8), "mottling", 0.6 * _opacity(s),
                 blur=0.1 * dd)


def stamp_ao(retina: Retina, rng: np.random.Generator, s: float) -> None:
    """Artery occlusion: a pale oedematous area with a cherry-red spot in its middle."""
    dd = retina.dd
    centre = retina.pole[None]
    shape = retina.layer()
    draw_ellipses(shape, centre, np.float32([[2.8, 2.1]]) * rng.uniform(0.5, 1.0) * _size(s) * dd,
                  [rng.uniform(0, 180)])
    retina.paint(shape, "ischaemic", 0.15 + 0.5 * min(s, 1.2), blur=0.6 * dd)
    shape = retina.layer()
    draw_discs(shape, centre, [max(0.3 * _size(s) * dd, 0.7)])
    retina.paint(shape, "cherry", 0.4 + 0.5 * min(s, 1.0), blur=0.08 * dd)


Stamp = Callable[[Retina, np.random.Generator, float], None]
STAMPS: dict[str, Stamp] = {
    "AMD": stamp_amd,
    "RVO": stamp_rvo,
    "MH": stamp_mh,
    "DR": stamp_dr,
    "RD": stamp_rd,
    "RP": stamp_rp,
    "AO": stamp_ao,
    "DM": stamp_dm,
}


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8[H,W,3] photograph, got "
                         f"{image.dtype}{list(image.shape)}")


def _check_diseases(diseases: Sequence[str]) -> None:
    for disease in diseases:
        if disease in UNSTAMPED:
            raise ValueError(f"disease {disease!r} has no lesion stamp: {UNSTAMPED[disease]}")
        if disease not in STAMPS:
            raise ValueError(f"unknown disease {disease!r}; stamps exist for {', '.join(STAMPS)}")


def paint_lesions(image: np.ndarray, rng: np.random.Generator,
                  disease: str) -> tuple[np.ndarray, np.ndarray]:
    """Stamps one disease's lesions, at a random severity, into a copy of the photograph.

    image: uint8[S,S,3] -> (uint8[S,S,3], bool[S,S] exactly the changed pixels, all inside
    the field of view). The mask can be empty when the lesions would not change a grey level
    (a dark lesion on a black frame); `paint_anomaly` then paints a texture instead.
    """
    _check_image(image)
    _check_diseases([disease])
    retina = Retina(image, rng)
    STAMPS[disease](retina, rng, _severity(rng))
    return retina.result()


def perlin_noise(rng: np.random.Generator, height: int, width: int,
                 cells: tuple[int, int]) -> np.ndarray:
    """float32[height, width] gradient (Perlin) noise in about [-1, 1] (scaled by sqrt 2 as
    DRAEM's, which PERLIN_THRESHOLD assumes), with `cells` (rows, columns) lattice cells across
    the picture."""
    rows, cols = cells
    angles = rng.uniform(0, 2 * np.pi, (rows + 1, cols + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], -1).astype(np.float32)
    y = (np.arange(height, dtype=np.float32) + 0.5) * rows / height
    x = (np.arange(width, dtype=np.float32) + 0.5) * cols / width
    iy, ix = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        # Row then column takes: much cheaper than one broadcast fancy index over (H, W).
        gx = gradients[..., 0].take(iy + dy, 0).take(ix + dx, 1)
        gy = gradients[..., 1].take(iy + dy, 0).take(ix + dx, 1)
        return gx * (fx - dx) + gy * (fy - dy)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    wy, wx = fade(fy), fade(fx)
    top = corner(0, 0) + wx * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + wx * (corner(1, 1) - corner(1, 0))
    return (np.sqrt(2) * (top + wy * (bottom - top))).astype(np.float32)


def perlin_mask(rng: np.random.Generator, fov: np.ndarray) -> np.ndarray:
    """bool[S,S]: thresholded Perlin noise of random scale per axis, inside `fov`, non-empty.

    Scales as DRAEM's (powers of two per axis, cells >= MIN_PERLIN_CELL px); a draw that leaves
    fewer than 4 pixels in the field is redrawn, and after ten tries the threshold drops.
    """
    h, w = fov.shape
    top = max(int(np.log2(max(min(h, w) // MIN_PERLIN_CELL, 1))), 0)
    threshold = PERLIN_THRESHOLD
    for attempt in range(20):
        cells = (2 ** int(rng.integers(0, top + 1)), 2 ** int(rng.integers(0, top + 1)))
        noise = perlin_noise(rng, h, w, cells)
        if rng.random() < 0.5:  # DRAEM rotates the noise; a transpose varies its orientation
            noise = cv2.resize(noise.T, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = (noise > threshold) & fov
        if mask.sum() >= 4:
            return mask
        if attempt >= 10:
            threshold *= 0.8
    return fov.copy()


def _noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour blobs over fine grain: float32[h,w,3] in [0, 1]."""
    cells = int(rng.integers(2, max(w // 4, 3)))
    base = rng.uniform(0, 1, 3).astype(np.float32)
    amount = rng.uniform(0.1, 0.5)
    blobs = np.stack([smooth_noise(rng, h, w, cells) for _ in range(3)], -1)
    grain = rng.normal(0, rng.uniform(0, 0.1), (h, w, 3)).astype(np.float32)
    return np.clip(base + amount * blobs + grain, 0, 1)


def _stripe_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Stripes or a checkerboard between two random colours: float32[h,w,3] in [0, 1]."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(3, max(w / 4, 4))
    angle = rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period
                  + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:
        wave = wave * np.sin(2 * np.pi * (-xs * np.sin(angle) + ys * np.cos(angle)) / period)
    t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    colours = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    return colours[0] + t[..., None] * (colours[1] - colours[0])


def _image_texture(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The photograph (or another one) shifted, flipped and turned: float32[S,S,3] in [0, 1]."""
    h, w = image.shape[:2]
    moved = np.roll(image, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
    moved = np.rot90(moved, int(rng.integers(4)))
    if rng.random() < 0.5:
        moved = moved[:, ::-1]
    return moved.astype(np.float32) / np.float32(255)


def _jitter_colours(rng: np.random.Generator, texture: np.ndarray) -> np.ndarray:
    """Up to three of DRAEM's colour augmentations: per-channel gamma, brightness, channel swap,
    solarise, posterise."""
    ops = rng.permutation(5)[: int(rng.integers(1, 4))]
    for op in ops.tolist():
        if op == 0:
            texture = texture ** rng.uniform(0.5, 2.0, 3).astype(np.float32)
        elif op == 1:
            texture = np.clip(texture * np.float32(rng.uniform(0.8, 1.2))
                              + np.float32(rng.uniform(-0.12, 0.12)), 0, 1)
        elif op == 2:
            texture = texture[..., rng.permutation(3)]
        elif op == 3:
            threshold = np.float32(rng.uniform(0.125, 0.5))
            texture = np.where(texture > threshold, 1 - texture, texture)
        else:
            levels = np.float32(2 ** int(rng.integers(1, 5)))
            texture = np.floor(texture * levels) / levels
    return texture.astype(np.float32)


def paint_texture(image: np.ndarray, rng: np.random.Generator,
                  source: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM's generic anomaly: a Perlin-noise region of the field filled with a foreign texture.

    The texture is procedural noise, stripes, or a shifted/turned copy of `source` (another
    photograph, uint8[S,S,3] like `image`) or of the image itself, colour-jittered; inside the
    region out = beta * image + (1 - beta) * texture with beta ~ U(0, 0.8).
    image: uint8[S,S,3] -> (uint8[S,S,3], bool[S,S] exactly the changed pixels, inside the field).
    """
    _check_image(image)
    if source is not None and source.shape != image.shape:
        raise ValueError(f"texture source shape {source.shape} differs from the image's "
                         f"{image.shape}")
    h, w = image.shape[:2]
    fov = field_of_view(image)
    region = perlin_mask(rng, fov)
    kind = int(rng.integers(3))
    if kind == 0:
        texture = _noise_texture(rng, h, w)
    elif kind == 1:
        texture = _stripe_texture(rng, h, w)
    else:
        texture = _image_texture(rng, image if source is None else source)
    texture = _jitter_colours(rng, texture)
    beta = np.float32(rng.uniform(0, MAX_TEXTURE_OPACITY))
    rgb = image.astype(np.float32) / np.float32(255)
    blended = beta * rgb + (1 - beta) * texture
    rgb = np.where(region[..., None], blended, rgb)
    out = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return out, changed_pixels(image, out)


def _warp(rgb: np.ndarray, centre: np.ndarray, radius: float,
          rng: np.random.Generator) -> np.ndarray:
    """The picture swollen or shrunk within `radius` px of `centre`: float32[S,S,3].

    A pixel at distance r (in radii) samples the source at r * (1 + (1/m - 1)(1 - r^2)^2): the
    middle is magnified m times, the border r = 1 does not move, and the map is monotonic for
    m in MAGNIFICATION, so nothing folds over.
    """
    m = np.exp(rng.uniform(np.log(MIN_MAGNIFICATION), np.log(MAGNIFICATION[1])))
    if rng.random() < 0.5:
        m = max(1 / m, MAGNIFICATION[0])
    h, w = rgb.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    r2 = np.minimum((dx * dx + dy * dy) / np.float32(radius * radius), 1)
    scale = 1 + np.float32(1 / m - 1) * (1 - r2) ** 2
    return cv2.remap(rgb, centre[0] + dx * scale, centre[1] + dy * scale, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _retone(retina: Retina, centre: np.ndarray, radius: float,
            rng: np.random.Generator) -> np.ndarray:
    """The picture paler or darker over a soft elliptical blob, its texture kept (each pixel
    screened towards a pale tint or multiplied by dark gains): float32[S,S,3]."""
    blob = retina.layer()
    draw_ellipses(blob, centre[None], [[radius, radius * rng.uniform(0.5, 1.0)]],
                  [rng.uniform(0, 180)])
    alpha = cv2.GaussianBlur(blob.astype(np.float32) / 255, (0, 0), max(0.25 * radius, 0.5))
    alpha = (alpha * rng.uniform(0.4, 0.9))[..., None]
    rgb = retina.rgb
    if rng.random() < 0.5:
        tint = np.float32(rng.uniform(0.25, 0.6) * np.array([1, rng.uniform(0.85, 1),
                                                              rng.uniform(0.6, 1)]))
        target = 1 - (1 - rgb) * (1 - tint)
    else:
        target = rgb * rng.uniform(0.45, 0.8, 3).astype(np.float32)
    return rgb + alpha * (target - rgb)


def paint_structure(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A generic change of existing structure: a local swelling or shrinking, a paler or darker
    tone with the texture kept, or both, over 0.5-1.5 disc diameters.

    Lesion stamps add something new; many diseases instead change what is there (a larger pale
    cup, an atrophic border, a swollen or thinned vessel), and a detector trained only on added
    things has no reason to notice those. Half the changes are centred on the picture's most
    conspicuous structure (`Retina.salient`, where a warp changes the most), the rest anywhere
    in the field. No disease's painter is used. Pixels whose change stays under
    STRUCTURE_TOLERANCE keep their value.
    image: uint8[S,S,3] -> (uint8[S,S,3], bool[S,S] exactly the changed pixels, inside the field
    of view; empty when the change was too faint anywhere, e.g. a warp of a flat region).
    """
    _check_image(image)
    retina = Retina(image, rng)
    centre = retina.salient() if rng.random() < 0.5 else retina.random_point(rng)
    radius = max(rng.uniform(0.5, 1.5) * retina.dd, 2.0)
    kind = int(rng.integers(3))  # 0 warp, 1 tone, 2 both
    if kind != 1:
        retina.rgb = _warp(retina.rgb, centre, radius, rng)
    if kind != 0:
        retina.rgb = _retone(retina, centre, radius, rng)
    out = np.clip(np.rint(retina.rgb * 255), 0, 255).astype(np.uint8)
    visible = _channel_max(cv2.absdiff(out, image)) >= STRUCTURE_TOLERANCE
    out = np.where((visible & retina.fov)[..., None], out, image)
    return out, changed_pixels(image, out)


def paint_anomaly(image: np.ndarray, rng: np.random.Generator,
                  diseases: Sequence[str] = tuple(STAMPS), p_texture: float = 0.5,
                  source: np.ndarray | None = None,
                  p_structure: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic anomaly for a normal photograph, for training a DRAEM-style detector.

    With probability `p_structure` a change of existing structure (`paint_structure`), with
    probability `p_texture` a texture anomaly (`paint_texture`, foreign texture from `source` or
    procedural), else the lesions of one disease drawn uniformly from `diseases`
    (`paint_lesions`; a texture when `diseases` is empty). A held-out-lesion evaluation passes
    the training diseases only. A structure or lesion too faint to change a pixel falls back
    to a texture.
    image: uint8[S,S,3] -> (uint8[S,S,3], bool[S,S] exactly the changed pixels, inside the
    field of view; non-empty unless the picture is flat black).
    """
    _check_image(image)
    _check_diseases(diseases)
    for name, p in (("p_texture", p_texture), ("p_structure", p_structure)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if p_texture + p_structure > 1:
        raise ValueError(f"p_texture + p_structure must be at most 1, got "
                         f"{p_texture} + {p_structure}")
    choice = rng.random() if diseases or p_structure else 0.0
    if choice < p_structure:
        out, mask = paint_structure(image, rng)
    elif not diseases or choice < p_structure + p_texture:
        return paint_texture(image, rng, source)
    else:
        out, mask = paint_lesions(image, rng, diseases[int(rng.integers(len(diseases)))])
    if not mask.any():
        return paint_texture(image, rng, source)
    return out, mask
