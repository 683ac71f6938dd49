"""Healthy fundus anatomy for the synthetic generator: layout, background, disc, macula, vessels.

Everything a patient keeps across visits (pigment, colour balance, vessel tree, disc position)
lives in `PatientLook`; the vessel tree is grown in eye coordinates, so `Geometry.to_px` mirrors
it between the left and right eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from jaxfundus.synthetic.canvas import (
    SHIFT,
    Canvas,
    Geometry,
    draw_discs,
    draw_ellipses,
    draw_polylines,
    fixed_points,
    smooth_noise,
)

STYLES = ("optos", "colour")
LOW_RES = 4  # smooth fields (background, vignetting) are computed at 1/LOW_RES size


@dataclass(frozen=True)
class Palette:
    """RGB colours in [0, 1] of the healthy structures in one imaging style."""

    pole: tuple[float, float, float]  # retina around the macula
    periphery: tuple[float, float, float]  # retina at the field edge
    disc: tuple[float, float, float]
    cup: tuple[float, float, float]
    vein: tuple[float, float, float]
    artery: tuple[float, float, float]
    macula_gains: tuple[float, float, float]  # multiplies the retina at the fovea


PALETTES = {
    # Optos pseudo-colour: red and green laser channels only, so blue stays near zero.
    "optos": Palette(
        pole=(0.80, 0.56, 0.08),
        periphery=(0.44, 0.55, 0.06),
        disc=(0.96, 0.76, 0.28),
        cup=(1.0, 1.0, 0.72),
        vein=(0.30, 0.10, 0.02),
        artery=(0.58, 0.26, 0.04),
        macula_gains=(0.78, 0.74, 0.9),
    ),
    "colour": Palette(
        pole=(0.90, 0.46, 0.20),
        periphery=(0.66, 0.24, 0.10),
        disc=(1.0, 0.74, 0.48),
        cup=(1.0, 0.97, 0.86),
        vein=(0.42, 0.05, 0.04),
        artery=(0.70, 0.15, 0.08),
        macula_gains=(0.74, 0.68, 0.72),
    ),
}


@dataclass(frozen=True)
class VesselGroup:
    """All vessels of one kind in one arcade, as polyline chunks of about constant width.

    Coordinates are eye coordinates (disc diameters, see Geometry). Chunk i is
    points[starts[i]:ends[i]]; neighbouring chunks of a vessel share an end point.
    """

    kind: str  # "artery" or "vein"
    arcade: str  # quadrant served: "ST", "IT", "SN", "IN" (superior/inferior, temporal/nasal)
    points: np.ndarray  # (n, 2) float32
    normals: np.ndarray  # (n, 2) float32 unit normals of the vessel at each point
    arc: np.ndarray  # (n,) float32 distance along the vessel (dd)
    starts: np.ndarray  # (m,) int
    ends: np.ndarray  # (m,) int
    widths: np.ndarray  # (m,) float32 chunk widths (dd)


# Main trunks: initial heading (rad; 0 = nasal, pi = temporal, -pi/2 = up), turn (rad per dd),
# length (dd) and vein width (dd). The temporal arcades arch around the macula.
ARCADES = {
    "ST": (-np.pi / 2 - 0.3, -0.48, 12.0, 0.11),
    "IT": (np.pi / 2 + 0.3, 0.48, 12.0, 0.11),
    "SN": (-np.pi / 2 + 0.55, 0.12, 9.0, 0.085),
    "IN": (np.pi / 2 - 0.55, -0.12, 9.0, 0.085),
}
ARTERY_TO_VEIN_WIDTH = 0.7
STEP_DD = 0.15
CHUNK_STEPS = 6  # points per width chunk (~1 dd)
FOVEAL_AVASCULAR_DD = 0.45
BRANCH_SPACING_DD = (1.6, 2.2)  # mean distance between side branches, by depth
MAX_DEPTH = 2


def _grow(rng, start: complex, heading, turn, width, length, depth, out) -> None:
    """Grows one vessel and, recursively, its side branches: appends (points, phi, widths).

    Points are complex numbers x + iy in eye coordinates; phi is the heading at each point.
    """
    n = max(int(length / STEP_DD), 3)
    arc = np.arange(n) * STEP_DD
    # The turn fades with distance so arcades bend around the macula and then run straight.
    phi = heading + np.cumsum(turn * np.exp(-arc / 2.2) * STEP_DD + rng.normal(0, 0.05, n))
    steps = STEP_DD * np.exp(1j * phi)
    points = start + np.cumsum(steps) - steps[0]
    inside_faz = np.abs(points) < FOVEAL_AVASCULAR_DD
    if inside_faz.any():
        n = int(np.argmax(inside_faz))
        if n < 2:
            return
        points, arc, phi = points[:n], arc[:n], phi[:n]
    widths = width * (1 - 0.6 * arc / max(length, 1e-6))
    out.append((points, phi, widths))
    if depth >= MAX_DEPTH:
        return
    n_branches = rng.poisson(arc[-1] / BRANCH_SPACING_DD[depth])
    for i in np.sort(rng.integers(2, n, n_branches)) if n > 2 else ():
        side = 1.0 if rng.random() < 0.5 else -1.0
        child_width = widths[i] * rng.uniform(0.5, 0.75)
        if child_width < 0.02:
            continue
        child_length = max((arc[-1] - arc[i]) * rng.uniform(0.3, 0.7), 0.8)
        _grow(rng, points[i], phi[i] + side * rng.uniform(0.5, 1.1), -side * rng.uniform(0, 0.2),
              child_width, child_length, depth + 1, out)


def _group(kind: str, arcade: str, vessels: list) -> VesselGroup:
    """Packs grown vessels into width chunks (see VesselGroup)."""
    lengths = np.array([len(points) for points, _, _ in vessels])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    points = np.concatenate([points for points, _, _ in vessels])
    phi = np.concatenate([phi for _, phi, _ in vessels])
    arc = np.concatenate([np.arange(n) * STEP_DD for n in lengths])
    starts, ends, widths = [], [], []
    for offset, n, (_, _, w) in zip(offsets.tolist(), lengths.tolist(), vessels, strict=True):
        a = np.arange(0, n - 1, CHUNK_STEPS)
        b = np.minimum(a + CHUNK_STEPS + 1, n)
        starts.append(offset + a)
        ends.append(offset + b)
        widths.append(w[(a + b) // 2])
    as_xy = lambda z: np.stack([z.real, z.imag], 1).astype(np.float32)  # noqa: E731
    return VesselGroup(kind, arcade, as_xy(points), as_xy(1j * np.exp(1j * phi)),
                       arc.astype(np.float32), np.concatenate(starts), np.concatenate(ends),
                       np.concatenate(widths).astype(np.float32))


def grow_vessel_tree(rng: np.random.Generator, disc: tuple[float, float],
                     ) -> tuple[VesselGroup, ...]:
    """A branching vein and artery for each of the four arcades, rooted at the disc."""
    groups = []
    for arcade, (heading, turn, length, vein_width) in ARCADES.items():
        for kind, width, offset in (("vein", vein_width, 0.06),
                                    ("artery", vein_width * ARTERY_TO_VEIN_WIDTH, -0.06)):
            start = complex(disc[0] + rng.normal(0, 0.05), disc[1] + rng.normal(0, 0.05))
            vessels: list = []
            _grow(rng, start, heading + offset + rng.normal(0, 0.08),
                  turn * rng.uniform(0.85, 1.15), width, length * rng.uniform(0.85, 1.1), 0,
                  vessels)
            groups.append(_group(kind, arcade, vessels))
    return tuple(groups)


@dataclass(frozen=True)
class PatientLook:
    """Appearance shared by every image of a patient."""

    pigment: float  # multiplies the retina's brightness
    red_green: float  # multiplies red and divides green
    disc: tuple[float, float]  # eye coordinates of the disc centre
    disc_aspect: float  # horizontal / vertical disc diameter
    cup_ratio: float  # healthy cup/disc diameter ratio
    vessels: tuple[VesselGroup, ...]
    texture_seed: int


def sample_look(rng: np.random.Generator) -> PatientLook:
    """Draws a patient's appearance."""
    disc = (2.5 + rng.normal(0, 0.12), -0.25 + rng.normal(0, 0.1))
    return PatientLook(
        pigment=rng.uniform(0.8, 1.1),
        red_green=rng.uniform(0.9, 1.1),
        disc=disc,
        disc_aspect=rng.uniform(0.82, 0.95),
        cup_ratio=rng.uniform(0.15, 0.45),
        vessels=grow_vessel_tree(rng, disc),
        texture_seed=int(rng.integers(2**31)),
    )


def layout(style: str, width: int, height: int, eye: str, look: PatientLook,
           rng: np.random.Generator) -> Geometry:
    """Places the eye in the picture; `rng` adds the per-image camera alignment jitter."""
    nasal = 1 if eye == "R" else -1
    rotation = float(np.radians(rng.normal(0, 2.0)))
    if style == "optos":
        dd = 0.066 * width * rng.uniform(0.95, 1.05)
        centre = (width / 2 + rng.normal(0, 0.015 * width),
                  height / 2 + rng.normal(0, 0.02 * height))
        # Centre the posterior pole (fovea to disc) rather than the fovea itself.
        fovea = (centre[0] - nasal * 1.2 * dd, centre[1] + rng.normal(0, 0.02 * height))
        axes = (0.60 * width, 0.66 * height)
    else:
        radius = 0.47 * min(height, 0.75 * width)
        dd = 0.28 * radius * rng.uniform(0.95, 1.05)
        centre = (width / 2, height / 2)
        fovea = (centre[0] - nasal * 0.3 * radius + rng.normal(0, 0.03 * radius),
                 centre[1] + rng.normal(0.03 * radius, 0.03 * radius))
        axes = (radius, radius)
    return Geometry(width, height, fovea, dd, nasal, rotation, look.disc, centre, axes)


@dataclass
class Anatomy:
    """Per-image departures of the healthy structures that some diseases cause."""

    cup_ratio: float
    disc_pallor: float = 0.0  # 0..1 blend of the disc towards white
    artery_width: float = 1.0
    vein_width: float = 1.0
    vessel_opacity: float = 1.0
    occluded_arcade: str | None = None  # its vein is dilated and tortuous (RVO)
    occlusion: float = 0.0  # how dilated and tortuous, ~0-1.2
    cup_is_lesion: bool = False  # glaucoma: the cup goes into the lesion mask


@dataclass
class Fundus:
    """Everything a painter needs about the eye in one picture."""

    style: str
    geo: Geometry
    look: PatientLook
    palette: Palette
    anatomy: Anatomy


def _field_distance(height: int, width: int, centre, axes) -> np.ndarray:
    """(height, width) float32 elliptical distance from `centre` (1 on the ellipse `axes`),
    sampled on a 1/LOW_RES grid of the picture; upsample with `_upsample`."""
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) * LOW_RES - 0.5
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) * LOW_RES - 0.5
    return np.sqrt(((xs - centre[0]) / axes[0]) ** 2 + ((ys - centre[1]) / axes[1]) ** 2)


def _low_res_shape(canvas: Canvas) -> tuple[int, int]:
    h, w = canvas.mask.shape
    return -(-h // LOW_RES), -(-w // LOW_RES)


def _upsample(small: np.ndarray, canvas: Canvas) -> np.ndarray:
    h, w = canvas.mask.shape
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def paint_background(canvas: Canvas, fundus: Fundus, rng: np.random.Generator) -> None:
    """Retina colour: posterior pole to periphery gradient with smooth choroidal mottling."""
    geo, look, pal = fundus.geo, fundus.look, fundus.palette
    h, w = _low_res_shape(canvas)
    t = np.clip(_field_distance(h, w, geo.fovea, geo.field_axes), 0, 1)[..., None] ** 1.3
    pole, periphery = np.float32(pal.pole), np.float32(pal.periphery)
    gains = np.float32([look.pigment * look.red_green, look.pigment / look.red_green, look.pigment])
    texture_rng = np.random.default_rng(look.texture_seed)
    texture = (0.07 * smooth_noise(texture_rng, h, w, 7)
               + 0.05 * smooth_noise(texture_rng, h, w, 30)
               + 0.03 * smooth_noise(rng, h, w, 45))
    small = (pole + t * (periphery - pole)) * gains * (1 + texture[..., None])
    canvas.rgb = _upsample(small, canvas)


def paint_macula(canvas: Canvas, fundus: Fundus) -> None:
    """Darker macula with a small foveal pit."""
    geo = fundus.geo
    shape = canvas.layer()
    draw_discs(shape, geo.to_px([[0, 0]]), [0.9 * geo.dd])
    canvas.shade(shape, fundus.palette.macula_gains, 0.9, blur=0.45 * geo.dd)
    shape = canvas.layer()
    draw_discs(shape, geo.to_px([[0, 0]]), [0.15 * geo.dd])
    canvas.shade(shape, fundus.palette.macula_gains, 0.6, blur=0.1 * geo.dd)


def paint_disc(canvas: Canvas, fundus: Fundus) -> None:
    """Bright optic disc with a paler cup; pallor and cup size come from `fundus.anatomy`."""
    geo, pal, anatomy = fundus.geo, fundus.palette, fundus.anatomy
    centre = geo.to_px([geo.disc])
    axes = np.float32([[0.5 * geo.dd * fundus.look.disc_aspect, 0.5 * geo.dd]])
    pallor = anatomy.disc_pallor
    disc_colour = np.float32(pal.disc) * (1 - pallor) + np.float32(pal.cup) * pallor
    shape = canvas.layer()
    draw_ellipses(shape, centre, axes, [geo.rotation_deg])
    canvas.paint(shape, disc_colour, 0.95, blur=0.06 * geo.dd)
    # The cup sits slightly temporal in the disc.
    cup_centre = geo.to_px([[geo.disc[0] - 0.05, geo.disc[1]]])
    shape = canvas.layer()
    draw_ellipses(shape, cup_centre, axes * anatomy.cup_ratio, [geo.rotation_deg])
    canvas.paint(shape, pal.cup, 0.9, blur=0.06 * geo.dd, lesion=anatomy.cup_is_lesion)


def _vessel_pixels(group: VesselGroup, geo: Geometry, anatomy: Anatomy):
    """Pixel points (n, 2) and chunk widths (m,) of a group after dilation and tortuosity."""
    points, widths = group.points, group.widths
    if group.kind == "vein" and group.arcade == anatomy.occluded_arcade:
        # An occluded branch vein is engorged and tortuous downstream of the occlusion.
        wiggle = 0.12 * anatomy.occlusion * np.sin(group.arc * (2 * np.pi / 0.9))
        points = points + group.normals * wiggle[:, None]
        widths = widths * (1 + 0.6 * anatomy.occlusion)
    scale = anatomy.vein_width if group.kind == "vein" else anatomy.artery_width
    return geo.to_px(points), widths * (scale * geo.dd)


def paint_vessels(canvas: Canvas, fundus: Fundus) -> None:
    """Veins (wider, darker), an occluded vein (darker still, a lesion), then arteries."""
    geo, pal, anatomy = fundus.geo, fundus.palette, fundus.anatomy
    styles = {
        ("vein", False): (pal.vein, 0.85 * anatomy.vessel_opacity),
        ("vein", True): (np.float32(pal.vein) * (1 - 0.35 * min(anatomy.occlusion, 1)), 0.95),
        ("artery", False): (pal.artery, 0.75 * anatomy.vessel_opacity),
    }
    for (kind, occluded), (colour, opacity) in styles.items():
        lines, widths = [], []
        for group in fundus.look.vessels:
            is_occluded = group.kind == "vein" and group.arcade == anatomy.occluded_arcade
            if group.kind == kind and is_occluded == occluded:
                px, w = _vessel_pixels(group, geo, anatomy)
                lines += [px[a:b] for a, b in zip(group.starts.tolist(), group.ends.tolist(),
                                                  strict=True)]
                widths.append(w)
        if lines:
            shape = canvas.layer()
            draw_polylines(shape, lines, np.concatenate(widths))
            canvas.paint(shape, colour, opacity, lesion=occluded)


def optos_frame(canvas: Canvas, fundus: Fundus, rng: np.random.Generator) -> np.ndarray:
    """Vignetting plus eyelids and eyelashes at the top and bottom.

    Returns (H, W) bool: True where the retina is hidden (dark surround or eyelid).
    """
    geo = fundus.geo
    h, w = canvas.mask.shape
    e = _field_distance(*_low_res_shape(canvas), geo.field_centre, geo.field_axes)
    visibility = np.clip((1.0 - e) / 0.3, 0, 1)
    visibility = _upsample(visibility * visibility * (3 - 2 * visibility), canvas)
    canvas.scale(0.04 + 0.96 * visibility)
    hidden = visibility < 0.5
    for top, depth in ((True, rng.uniform(0.0, 0.22)), (False, rng.uniform(0.0, 0.15))):
        xs_edge = np.linspace(0, w, 24)
        # The lid margin bulges towards the pupil centre.
        ys_edge = depth * h * (1 - 0.5 * ((xs_edge - w / 2) / (w / 2)) ** 2)
        ys_edge = ys_edge if top else h - ys_edge
        border = -1.0 if top else h + 1.0
        polygon = np.concatenate([np.stack([xs_edge, ys_edge], 1), [[w, border], [0, border]]])
        lid = canvas.layer()
        cv2.fillPoly(lid, [fixed_points(polygon)], 255, cv2.LINE_AA, SHIFT)
        # Out-of-focus eyelashes reach in from the lid margin.
        lashes = _lashes(rng, xs_edge, ys_edge, 1 if top else -1, depth, h)
        draw_polylines(lid, lashes, rng.uniform(0.01, 0.025, len(lashes)) * w)
        canvas.paint(lid, (0.22, 0.26, 0.04), 0.85, blur=0.012 * w)
        hidden |= lid > 127
    return hidden


def _lashes(rng, xs_edge, ys_edge, direction, depth, height) -> list[np.ndarray]:
    """Curved eyelash strokes (pixel polylines) reaching in from a lid margin; more for a
    lower-hanging lid."""
    lines = []
    t = np.linspace(0, 1, 6)[:, None]
    for x0 in rng.uniform(xs_edge[0], xs_edge[-1], int(rng.integers(3, 12) * (0.3 + 5 * depth))):
        y0 = float(np.interp(x0, xs_edge, ys_edge))
        length = rng.uniform(0.06, 0.2) * height
        dx, bend = rng.normal(0, 0.35), rng.normal(0, 0.3)
        lines.append(np.hstack([x0 + length * t * (dx + bend * t), y0 + length * t * direction]))
    return lines


def colour_frame(canvas: Canvas, fundus: Fundus, rng: np.random.Generator) -> np.ndarray:
    """Round field on black with a darker rim; returns (H, W) bool, True outside the field."""
    geo = fundus.geo
    r = _field_distance(*_low_res_shape(canvas), geo.field_centre, geo.field_axes)
    rim = _upsample(1 - rng.uniform(0.25, 0.45) * np.clip(r, 0, 1) ** 3, canvas)
    field_mask = geo.field_mask()
    canvas.scale(rim * (field_mask.astype(np.float32) / 255))
    return field_mask < 128
