"""Disease lesions for the synthetic generator, one painter per TOP label.

Each painter takes `(canvas, fundus, layout_rng, rng, s)`: `layout_rng` is seeded per eye and
disease, so choices such as the occluded quadrant or the detached side persist across visits;
`rng` is seeded per image; `s` >= 0 is the image's severity (about 0.25-1.25 at the default
severity 1.0) scaling lesion count, size and contrast. Painters mark what they draw in
`canvas.mask`. Diseases that change healthy structures (cup, vessels, disc) first adjust the
`Anatomy` through `ADJUSTERS`, before the anatomy is painted.
"""

from __future__ import annotations

import cv2
import numpy as np

from jaxfundus.synthetic.anatomy import Anatomy, Fundus
from jaxfundus.synthetic.canvas import (
    SHIFT,
    Canvas,
    draw_discs,
    draw_ellipses,
    draw_polylines,
    fixed_points,
)

COLOURS = {
    "optos": {
        "blood": (0.42, 0.07, 0.02),
        "exudate": (1.0, 0.95, 0.38),
        "drusen": (0.96, 0.90, 0.50),
        "pigment": (0.07, 0.05, 0.01),
        "hole": (0.62, 0.12, 0.02),
        "cuff": (0.78, 0.76, 0.40),
        "detached": (0.70, 0.74, 0.50),
        "fold_light": (0.88, 0.90, 0.66),
        "fold_dark": (0.30, 0.34, 0.16),
        "ischaemic": (0.95, 0.96, 0.66),
        "cherry": (0.72, 0.12, 0.03),
        "cotton_wool": (0.96, 0.96, 0.72),
        "atrophy": (0.98, 0.84, 0.46),
    },
    "colour": {
        "blood": (0.42, 0.03, 0.02),
        "exudate": (0.98, 0.90, 0.38),
        "drusen": (0.96, 0.86, 0.52),
        "pigment": (0.10, 0.05, 0.02),
        "hole": (0.60, 0.09, 0.05),
        "cuff": (0.86, 0.62, 0.48),
        "detached": (0.78, 0.70, 0.64),
        "fold_light": (0.94, 0.88, 0.80),
        "fold_dark": (0.42, 0.32, 0.28),
        "ischaemic": (0.96, 0.90, 0.84),
        "cherry": (0.78, 0.08, 0.05),
        "cotton_wool": (0.98, 0.94, 0.86),
        "atrophy": (0.98, 0.82, 0.62),
    },
}


def _count(base: float, s: float) -> int:
    """Number of lesions: `base` at s = 1, proportional to severity."""
    return int(round(base * s))


def _opacity(s: float) -> float:
    """Contrast of a lesion: faint for subtle cases, opaque from s ~ 1."""
    return float(np.clip(0.3 + 0.7 * s, 0.0, 1.0)) if s > 0 else 0.0


def _size(s: float) -> float:
    """Lesion size multiplier: grows with severity, saturating for very severe cases."""
    return float(0.6 + 0.4 * min(s, 1.5))


def _cotton_wool(canvas, fundus, rng, n) -> None:
    """Fluffy white nerve-fibre infarcts near the temporal arcades."""
    geo = fundus.geo
    points = np.concatenate([g.points for g in fundus.look.vessels if g.arcade in ("ST", "IT")])
    near = points[np.hypot(points[:, 0] - geo.disc[0], points[:, 1] - geo.disc[1]) < 5]
    centres = near[rng.integers(0, len(near), n)] + rng.normal(0, 0.2, (n, 2))
    shape = canvas.layer()
    draw_ellipses(shape, geo.to_px(centres), rng.uniform(0.1, 0.25, (n, 2)) * geo.dd,
                  rng.uniform(0, 180, n))
    canvas.paint(shape, COLOURS[fundus.style]["cotton_wool"], 0.75, blur=0.08 * geo.dd,
                 lesion=True)


def paint_dr(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Diabetic retinopathy: microaneurysms and dot/blot haemorrhages over the posterior pole."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    n_micro, n_blot = _count(45, s), _count(24, s)
    centre = np.float32([1.0, 0.0])  # between fovea and disc
    micro = centre + rng.normal(0, (2.4, 1.9), (n_micro, 2))
    blots = centre + rng.normal(0, (2.6, 2.0), (n_blot, 2))
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(micro), np.full(n_micro, 0.035 * geo.dd))
    draw_ellipses(shape, geo.to_px(blots), rng.uniform(0.05, 0.18, (n_blot, 2)) * _size(s) * geo.dd,
                  rng.uniform(0, 180, n_blot))
    canvas.paint(shape, colours["blood"], _opacity(s), blur=0.02 * geo.dd, lesion=True)
    if rng.random() < 0.5 * s:
        _cotton_wool(canvas, fundus, rng, int(rng.integers(1, 4)))


def paint_dm(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Diabetic macular oedema: hard exudates in circinate rings and clusters around the macula."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    dots = []
    for _ in range(1 + int(s > 0.6) + int(layout_rng.random() < 0.3)):
        ring_centre = layout_rng.normal(0, 0.5, 2)
        ring_radius = layout_rng.uniform(0.4, 0.9) * _size(s)
        start, span = layout_rng.uniform(0, 2 * np.pi), layout_rng.uniform(np.pi, 2 * np.pi)
        n = _count(30, s)
        angle = start + rng.uniform(0, span, n)
        radius = ring_radius * rng.normal(1, 0.12, n)
        dots.append(ring_centre + np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None])
    dots.append(rng.normal(0, 1.1, (_count(15, s), 2)))
    dots = np.concatenate(dots)
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(dots), rng.uniform(0.025, 0.07, len(dots)) * _size(s) * geo.dd)
    canvas.paint(shape, colours["exudate"], _opacity(s), blur=0.015 * geo.dd, lesion=True)


def adjust_glaucoma(anatomy: Anatomy, layout_rng, s: float) -> None:
    """Glaucoma: a large, pale cup (cup/disc 0.55-0.9 versus 0.15-0.45 when healthy)."""
    anatomy.cup_ratio = float(np.clip(0.5 + 0.3 * min(s, 1.2) + layout_rng.normal(0, 0.03),
                                      0.5, 0.9))
    anatomy.disc_pallor = max(anatomy.disc_pallor, 0.25 * min(s, 1.2))
    anatomy.cup_is_lesion = True


def paint_glaucoma(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Glaucoma: peripapillary atrophy, a pale crescent on the temporal side of the disc."""
    if layout_rng.random() > 0.6:
        return
    geo = fundus.geo
    shape = canvas.layer()
    centre = geo.to_px([[geo.disc[0] - 0.12, geo.disc[1]]])
    draw_ellipses(shape, centre, [[0.62 * geo.dd * fundus.look.disc_aspect, 0.62 * geo.dd]],
                  [geo.rotation_deg])
    canvas.paint(shape, COLOURS[fundus.style]["atrophy"], 0.45 * _opacity(s), blur=0.05 * geo.dd)


def paint_amd(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """AMD: drusen and pigment clumps at the macula; some eyes atrophic or neovascular."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    subtype = layout_rng.random()
    centre = layout_rng.normal(0, 0.15, 2)
    if subtype < 0.3:  # geographic atrophy: sharp pale patch
        shape = canvas.layer()
        radius = layout_rng.uniform(0.35, 0.8) * _size(s) * geo.dd
        draw_ellipses(shape, geo.to_px([centre]), [[radius, radius * layout_rng.uniform(0.7, 1)]],
                      [layout_rng.uniform(0, 180)])
        canvas.paint(shape, colours["atrophy"], 0.75 * _opacity(s), blur=0.02 * geo.dd, lesion=True)
    elif subtype < 0.55:  # neovascular: subretinal blood
        shape = canvas.layer()
        radius = layout_rng.uniform(0.4, 0.9) * _size(s) * geo.dd
        draw_ellipses(shape, geo.to_px([centre + layout_rng.normal(0, 0.3, 2)]),
                      [[radius, radius * layout_rng.uniform(0.6, 1)]], [layout_rng.uniform(0, 180)])
        canvas.paint(shape, colours["blood"], 0.85 * _opacity(s), blur=0.06 * geo.dd, lesion=True)
    n_drusen, n_pigment = _count(90, s), _count(9, s)
    drusen = centre + np.clip(rng.normal(0, 0.65, (n_drusen, 2)), -1.8, 1.8)
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(drusen), rng.uniform(0.03, 0.11, n_drusen) * _size(s) * geo.dd)
    canvas.paint(shape, colours["drusen"], 0.9 * _opacity(s), blur=0.03 * geo.dd, lesion=True)
    shape = canvas.layer()
    draw_ellipses(shape, geo.to_px(centre + rng.normal(0, 0.5, (n_pigment, 2))),
                  rng.uniform(0.03, 0.08, (n_pigment, 2)) * geo.dd, rng.uniform(0, 180, n_pigment))
    canvas.paint(shape, colours["pigment"], 0.8 * _opacity(s), lesion=True)


def adjust_rvo(anatomy: Anatomy, layout_rng, s: float) -> None:
    """Branch RVO: one arcade's vein (mostly superotemporal) is dilated and tortuous."""
    anatomy.occluded_arcade = str(layout_rng.choice(["ST", "IT", "SN", "IN"],
                                                    p=[0.55, 0.35, 0.05, 0.05]))
    anatomy.occlusion = min(s, 1.2)


def paint_rvo(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Branch RVO: flame haemorrhages along the occluded vein, filling its quadrant."""
    geo, look = fundus.geo, fundus.look
    veins = [g for g in look.vessels
             if g.kind == "vein" and g.arcade == fundus.anatomy.occluded_arcade]
    points = np.concatenate([g.points for g in veins])
    normals = np.concatenate([g.normals for g in veins])
    from_disc = np.hypot(points[:, 0] - geo.disc[0], points[:, 1] - geo.disc[1])
    # Blood pools downstream of the occlusion (~1 dd from the disc) and thins out peripherally.
    weights = np.where(from_disc > 0.9, np.exp(-from_disc / 3.5), 0.0)
    n = _count(170, s)
    pick = rng.choice(len(points), n, p=weights / weights.sum())
    centres = (points[pick] + normals[pick] * rng.normal(0, 0.4, (n, 1))
               + rng.normal(0, 0.08, (n, 2)))
    # Flames follow the nerve fibres, i.e. roughly the local vessel direction.
    tangents = np.stack([normals[pick, 1], -normals[pick, 0]], 1)
    direction = geo.to_px(centres + 0.1 * tangents) - geo.to_px(centres)
    angles = np.degrees(np.arctan2(direction[:, 1], direction[:, 0]))
    axes = np.stack([rng.uniform(0.1, 0.32, n) * _size(s), rng.uniform(0.03, 0.07, n)], 1)
    shape = canvas.layer()
    draw_ellipses(shape, geo.to_px(centres), axes * geo.dd, angles + rng.normal(0, 15, n))
    canvas.paint(shape, COLOURS[fundus.style]["blood"], _opacity(s), blur=0.02 * geo.dd,
                 lesion=True)
    if rng.random() < 0.5 * s:
        _cotton_wool(canvas, fundus, rng, int(rng.integers(1, 3)))


def paint_mh(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Macular hole: a round, sharply bordered dark-red hole at the fovea in a pale cuff."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    centre = rng.normal(0, 0.04, (1, 2))
    radius = layout_rng.uniform(0.38, 0.5) * _size(s) * geo.dd
    # The cuff of detached retina around the hole: a pale ring that frames the dark hole.
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(centre), [2.1 * radius])
    canvas.paint(shape, colours["cuff"], 0.75 * _opacity(s), blur=0.2 * radius, lesion=True)
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(centre), [radius])
    canvas.paint(shape, colours["hole"], 0.5 + 0.45 * min(s, 1.0), lesion=True)
    n = int(rng.integers(3, 9))
    deposits = centre + rng.uniform(-0.4, 0.4, (n, 2)) * radius / geo.dd
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(deposits), np.full(n, 0.05 * radius))
    canvas.paint(shape, colours["exudate"], 0.8)


def _polar(angles, radii) -> np.ndarray:
    """(n, 2) eye coordinates of points at `radii` (dd) from the fovea along `angles` (rad)."""
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)


def paint_rd(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Retinal detachment: a grey, lighter, folded region from the field edge on one side."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    # Any side but straight up, where the upper lid would hide it.
    direction = -np.pi / 2 + np.pi / 5 + layout_rng.uniform(0, 2 * np.pi - 2 * np.pi / 5)
    half_width = (0.35 + 0.65 * min(s, 1.2)) * layout_rng.uniform(0.8, 1.2)
    # Fraction of the fovea-to-field-edge distance where the detachment starts.
    start = (0.85 - 0.42 * min(s, 1.2)) * layout_rng.uniform(0.9, 1.1)
    phase = layout_rng.uniform(0, 2 * np.pi)
    angles = direction + np.linspace(-half_width, half_width, 48)
    edge = np.array([geo.field_radius_dd(a) for a in angles])
    u = (angles - direction) / half_width
    # Rounded ends, a wavy border, and an outer boundary well beyond the field.
    inner = edge * (start + 0.45 * u**4 + 0.04 * np.sin(5 * u + phase))
    polygon = np.concatenate([_polar(angles, inner), _polar(angles[::-1], 1.6 * edge)])
    region = canvas.layer()
    cv2.fillPoly(region, [fixed_points(geo.to_px(polygon))], 255, cv2.LINE_AA, SHIFT)
    canvas.paint(region, colours["detached"], 0.2 + 0.6 * min(s, 1.0), blur=0.1 * geo.dd,
                 lesion=True)
    # Folds: wavy ridges running along the detachment border, light crest and dark trough.
    for k, colour in enumerate(("fold_light", "fold_dark") * 4):
        offset = 0.35 * (k // 2 + 1) + 0.12 * (k % 2)
        wobble = 0.12 * np.sin(angles * rng.uniform(8, 14) + rng.uniform(0, 6))
        fold = geo.to_px(_polar(angles, inner + offset + wobble))
        shape = canvas.layer()
        draw_polylines(shape, [fold], [rng.uniform(0.05, 0.1) * geo.dd])
        np.minimum(shape, region, out=shape)
        canvas.paint(shape, colours[colour], 0.55 * _opacity(s), blur=0.04 * geo.dd)
    shape = canvas.layer()
    draw_polylines(shape, [geo.to_px(_polar(angles, inner))], [0.07 * geo.dd])
    canvas.paint(shape, colours["fold_dark"], 0.4 * _opacity(s), blur=0.03 * geo.dd)


def adjust_rp(anatomy: Anatomy, layout_rng, s: float) -> None:
    """RP: attenuated vessels and a waxy pale disc."""
    k = min(s, 1.2)
    anatomy.artery_width *= 1 - 0.45 * k
    anatomy.vein_width *= 1 - 0.35 * k
    anatomy.vessel_opacity *= 1 - 0.2 * k
    anatomy.disc_pallor = max(anatomy.disc_pallor, 0.3 * k)


def paint_rp(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """RP: black bone-spicule pigment and mottling in the mid-periphery."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    angles = rng.uniform(0, 2 * np.pi, 400)
    edge = np.array([geo.field_radius_dd(a) for a in np.linspace(0, 2 * np.pi, 25)])
    edge_at = np.interp(angles, np.linspace(0, 2 * np.pi, 25), edge)
    # About two spicules per square dd of the annulus at s = 1, few in mild cases.
    annulus_area = 0.5 * np.mean(edge**2) * (0.95**2 - 0.4**2) * 2 * np.pi
    n = min(_count(2.0 * annulus_area, s**1.5), 400)
    radii = edge_at[:n] * np.sqrt(rng.uniform(0.4**2, 0.95**2, n))
    centres = _polar(angles[:n], radii)
    # Each spicule: 2-4 bent arms radiating from its centre.
    centres = np.repeat(centres, rng.integers(2, 5, n), axis=0)
    m = len(centres)
    heading, bend = rng.uniform(0, 2 * np.pi, m), rng.normal(0, 0.6, m)
    half = 0.5 * rng.uniform(0.06, 0.2, m)[:, None]
    mid = centres + half * np.stack([np.cos(heading), np.sin(heading)], 1)
    tip = mid + half * np.stack([np.cos(heading + bend), np.sin(heading + bend)], 1)
    shape = canvas.layer()
    draw_polylines(shape, list(geo.to_px(np.stack([centres, mid, tip], 1))),
                   np.full(m, max(0.035 * geo.dd, 0.8)))
    canvas.paint(shape, colours["pigment"], 0.9 * _opacity(s), lesion=True)
    # Diffuse pigment-epithelium mottling over the same mid-peripheral ring.
    mottling = canvas.layer()
    ring = geo.to_px(_polar(np.linspace(0, 2 * np.pi, 25), 0.68 * edge))
    cv2.polylines(mottling, [fixed_points(ring)], True, 255,
                  max(int(0.4 * np.mean(edge) * geo.dd), 1), cv2.LINE_AA, SHIFT)
    canvas.shade(mottling, (0.75, 0.72, 0.7), 0.5 * _opacity(s), blur=0.4 * geo.dd)


def adjust_ao(anatomy: Anatomy, layout_rng, s: float) -> None:
    """Artery occlusion: thread-like arteries."""
    anatomy.artery_width *= 1 - 0.4 * min(s, 1.2)


def paint_ao(canvas: Canvas, fundus: Fundus, layout_rng, rng, s: float) -> None:
    """Artery occlusion: pale, ischaemic posterior pole with a cherry-red spot at the fovea."""
    geo, colours = fundus.geo, COLOURS[fundus.style]
    shape = canvas.layer()
    axes = np.float32([[2.8, 2.1]]) * _size(s) * geo.dd
    draw_ellipses(shape, geo.to_px([[0.8, 0.0]]), axes, [geo.rotation_deg])
    canvas.paint(shape, colours["ischaemic"], 0.15 + 0.5 * min(s, 1.2), blur=0.6 * geo.dd,
                 lesion=True)
    shape = canvas.layer()
    draw_discs(shape, geo.to_px(rng.normal(0, 0.03, (1, 2))), [0.3 * _size(s) * geo.dd])
    canvas.paint(shape, colours["cherry"], 0.4 + 0.5 * min(s, 1.0), blur=0.08 * geo.dd,
                 lesion=True)


ADJUSTERS = {"Gla": adjust_glaucoma, "RVO": adjust_rvo, "RP": adjust_rp, "AO": adjust_ao}
PAINTERS = {
    "AMD": paint_amd,
    "RVO": paint_rvo,
    "Gla": paint_glaucoma,
    "MH": paint_mh,
    "DR": paint_dr,
    "RD": paint_rd,
    "RP": paint_rp,
    "AO": paint_ao,
    "DM": paint_dm,
}
