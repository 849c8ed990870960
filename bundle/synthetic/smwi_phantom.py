"""Rendering of the synthetic nigral SMWI cohort (software testing only; no real patient).

1. Image (:func:`simulate_subject`): axial 3D SMWI slab through the midbrain, 0.5 x 0.5 x 1 mm, RAS storage order:
   midbrain with CSF rim, cerebral peduncles, hypointense substantia nigra (SN), red nuclei and the hyperintense
   nigrosome-1, whose visibility is a sigmoid of the ipsilateral SBR; per-subject pose and size variation, bias
   field, high-pass SMWI processing noise, Rician noise and scanner gain (the parameters:
   :mod:`bundle.synthetic.smwi_model`).
2. Annotation: nigrosome-1 centre of each side in voxel indices with a +-1 voxel clicking error; the 50 x 50 x 20
   patch around it always lies inside the volume.

Written by hand: no library simulates SMWI.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundle.synthetic.smwi_model import (
    ACQUISITION,
    ANATOMY,
    PATCH_SHAPE,
    SCANNER,
    SLAB,
    STRUCTURES,
    SURROUNDINGS,
    VARIATION,
    VOLUME_SHAPE,
    VOXEL_SIZE,
    Acquisition,
    Anatomy,
    FieldOfView,
    Scanner,
)

__all__ = ["RenderedSubject", "render_subject", "simulate_subject"]


@dataclass(frozen=True)
class RenderedSubject:
    """One rendered subject with its ground truth; :func:`render_subject` returns the first four fields."""

    volume: np.ndarray  # int16 [X, Y, Z], RAS storage order
    affine: np.ndarray  # 4x4 float64, voxel -> scanner RAS mm
    centroid_right: np.ndarray  # annotated nigrosome-1 centre, int voxel indices
    centroid_left: np.ndarray
    nigrosome_right: np.ndarray  # true nigrosome-1 centre, fractional voxel indices
    nigrosome_left: np.ndarray
    visibility_right: float  # nigrosome-1 visibility in [0, 1]
    visibility_left: float
    masks: dict[str, np.ndarray] | None = None  # with ``masks=True``: STRUCTURES per side, bool [X, Y, Z]


def simulate_subject(
    sbr_right: float,
    sbr_left: float,
    rng: np.random.Generator,
    field: FieldOfView = SLAB,
    masks: bool = False,
    scanner: Scanner = SCANNER,
) -> RenderedSubject:
    """Render one synthetic SMWI volume of ``field`` from its right/left SBRs and return it with its ground truth.

    With ``SLAB`` and ``SCANNER`` the output is that of generator 1.1.0, bit for bit. ``masks`` adds the structure
    masks (no random numbers are drawn for them, so the volume is the same either way). ``scanner``: a site's voxel
    grid (``field.shape`` counts its voxels), slab angulation, contrast and acquisition (multi-site cohort)."""
    a, var, acq = scanner.anatomy, VARIATION, scanner.acquisition
    shape, voxel = field.shape, scanner.voxel_size_mm
    scale = 1.0 + rng.uniform(-var.scale, var.scale)
    if field.shift_sd_mm is None:
        shift = rng.uniform(-var.shift_mm, var.shift_mm, 3)
    else:
        sd = np.asarray(field.shift_sd_mm)
        shift = np.clip(rng.normal(0.0, sd), -2.5 * sd, 2.5 * sd)
    rot = _rotation(*np.radians(rng.uniform(-1.0, 1.0, 3) * [field.rot_xy_deg, field.rot_xy_deg, field.rot_z_deg]))
    side_shift = rng.uniform(-var.side_shift_mm, var.side_shift_mm, (2, 3))
    side_scale = 1.0 + rng.uniform(-var.side_scale, var.side_scale, 2)
    factor = rng.uniform(*scanner.visibility_factor)
    cistern = rng.uniform(*a.cistern_width)
    visibility = (_visibility(sbr_right, factor), _visibility(sbr_left, factor))

    # subject-frame coordinates p of every voxel centre g, where tilt @ g = scale * rot @ p + shift
    tilt = _rotation(math.radians(scanner.slab_tilt_deg), 0.0, 0.0)
    grid_shift = shift if scanner.slab_tilt_deg == 0.0 else tilt.T @ shift
    gx, gy, gz = (g - np.float32(s) for g, s in zip(_grid_mm(shape, voxel), grid_shift, strict=True))
    inv = (rot.T / scale if scanner.slab_tilt_deg == 0.0 else rot.T @ tilt / scale).astype(np.float32)
    px, py, pz = (inv[i, 0] * gx + inv[i, 1] * gy + inv[i, 2] * gz for i in range(3))

    midbrain = np.minimum(_ellipse_sd((px, py), a.body_centre, a.body_semi), _peduncle_sd(px, py))
    midbrain = np.minimum(midbrain, _peduncle_sd(-px, py))
    midbrain = np.maximum(midbrain, -_ellipse_sd((px, py), a.fossa_centre, a.fossa_semi))
    img = np.full(px.shape, a.background, np.float32)
    if field.surroundings:
        _paint_surroundings(img, px, py, pz)
    _paint(img, midbrain - np.float32(cistern), a.csf, a.edge_width)
    _paint(img, midbrain, a.tissue, a.edge_width)

    n1_side_frame = _nigrosome_centre()
    true_voxels = []
    structure_masks: dict[str, np.ndarray] = {}
    for side, (mirror, sbr) in enumerate(((1.0, sbr_right), (-1.0, sbr_left))):
        sx, sy, sz = side_shift[side]
        k = np.float32(1.0 / side_scale[side])
        x = (np.float32(mirror) * px - np.float32(sx)) * k
        shapes = _paint_side(img, x, (py - np.float32(sy)) * k, (pz - np.float32(sz)) * k, sbr, visibility[side], a)
        if masks:
            name = ("right", "left")[side]
            structure_masks |= {f"{structure}_{name}": shapes[structure] < 0 for structure in STRUCTURES}
        n1 = side_shift[side] + side_scale[side] * n1_side_frame
        n1[0] *= mirror
        world = scale * rot @ n1 + shift
        true_voxels.append(_mm_to_voxel(world if scanner.slab_tilt_deg == 0.0 else tilt.T @ world, shape, voxel))
    _paint(img, _ellipse_sd((px, py), a.aqueduct_centre, (a.aqueduct_radius,) * 2), a.csf, a.edge_width)
    if field.surroundings:
        _paint_veins(img, px, py, pz, rng)

    img += np.float32(acq.processing_noise_sd) * _laplacian_noise(rng, shape)
    img *= _bias_field(rng, shape, voxel, acq.bias_coef)
    sigma = np.float32(rng.uniform(*acq.rician_sigma))
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt(real * real + imag * imag) * np.float32(rng.uniform(*acq.gain))
    volume = np.rint(img).clip(0, np.iinfo(np.int16).max).astype(np.int16)

    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * voxel
    if scanner.slab_tilt_deg != 0.0:
        affine[:3] = tilt @ affine[:3]
    affine[:3, 3] += rng.uniform(-acq.scanner_offset_mm, acq.scanner_offset_mm, 3)
    return RenderedSubject(
        volume=volume,
        affine=affine,
        centroid_right=_annotate(true_voxels[0], rng, shape, acq, voxel),
        centroid_left=_annotate(true_voxels[1], rng, shape, acq, voxel),
        nigrosome_right=true_voxels[0],
        nigrosome_left=true_voxels[1],
        visibility_right=visibility[0],
        visibility_left=visibility[1],
        masks=structure_masks if masks else None,
    )


def render_subject(
    sbr_right: float, sbr_left: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one subject: (int16 volume [X, Y, Z] RAS, 4x4 RAS affine, right centroid, left centroid) in voxels."""
    s = simulate_subject(sbr_right, sbr_left, rng)
    return s.volume, s.affine, s.centroid_right, s.centroid_left


# --- image model -------------------------------------------------------------------------------------------------


def _inside(sd: np.ndarray, edge_width: float = ANATOMY.edge_width) -> np.ndarray:
    """Soft membership (0..1) of a signed distance in mm, negative inside."""
    return 0.5 * (1.0 - np.tanh(sd * np.float32(0.5 / edge_width)))


def _paint(img: np.ndarray, sd: np.ndarray, value: float, edge_width: float = ANATOMY.edge_width) -> None:
    """Blend ``value`` into ``img`` inside the soft shape given by its signed distance ``sd``."""
    img += (np.float32(value) - img) * _inside(sd, edge_width)


def _ellipse_sd(coords: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """First-order signed distance (mm) to an axis-aligned ellipse or ellipsoid."""
    f = np.float32(-1.0)
    grad2 = np.float32(0.0)
    for x, c, s in zip(coords, centre, semi, strict=True):
        u = (x - np.float32(c)) / np.float32(s)
        f = f + u * u
        grad2 = grad2 + (u / np.float32(s)) ** 2
    return f / np.maximum(2.0 * np.sqrt(grad2), np.float32(1e-3))


def _box_sd(*q: np.ndarray) -> np.ndarray:
    """Signed distance of a box, given ``|coordinate| - half-size`` along each of its axes."""
    outside = np.sqrt(sum(np.maximum(qi, 0.0) ** 2 for qi in q))
    return outside + np.minimum(np.maximum.reduce(q), 0.0)


def _peduncle_sd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to the right cerebral peduncle, an ellipse whose long axis points anterolaterally."""
    a = ANATOMY
    cos, sin = (np.float32(f(math.radians(a.peduncle_tilt_deg))) for f in (math.cos, math.sin))
    u, w = x - np.float32(a.peduncle_centre[0]), y - np.float32(a.peduncle_centre[1])
    return _ellipse_sd((cos * u - sin * w, cos * w + sin * u), (0.0, 0.0), a.peduncle_semi)


def _paint_side(
    img: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, sbr: float, visibility: float, a: Anatomy = ANATOMY
) -> dict[str, np.ndarray]:
    """Paint crus cerebri, red nucleus, SN and nigrosome-1 of one side, given side-frame coordinates; return the
    signed distances (mm, negative inside) of the red nucleus, the nigra and the nigrosome-1 (STRUCTURES)."""
    var, edge = VARIATION, a.edge_width
    lo, hi = var.degeneration_sbr
    degeneration = min(max((hi - sbr) / (hi - lo), 0.0), 1.0)
    dx, dy = x - np.float32(a.sn_arc_centre[0]), y - np.float32(a.sn_arc_centre[1])
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)

    _paint(img, np.maximum(_peduncle_sd(x, y), np.float32(a.sn_radius + 0.5 * a.sn_thickness + 0.5) - r), a.crus, edge)
    red_nucleus = _ellipse_sd((x, y, z), a.rn_centre, a.rn_semi)
    _paint(img, red_nucleus, a.rn, edge)

    t0, t1 = (math.radians(t) for t in a.sn_angles_deg)
    along = np.float32(a.sn_radius) * (theta - np.float32(0.5 * (t0 + t1)))  # arc length from the SN middle
    thickness = a.sn_thickness * (1.0 - var.sn_thinning * degeneration)
    sn = _box_sd(
        np.abs(along) - np.float32(0.5 * a.sn_radius * (t1 - t0)),
        np.abs(r - np.float32(a.sn_radius)) - np.float32(0.5 * thickness),
        np.abs(z) - np.float32(a.sn_z_half),
    )
    _paint(img, sn, a.sn - var.sn_darkening * degeneration, edge)

    n1_r = np.float32(a.sn_radius + a.n1_radius_offset)
    n1_along = n1_r * (theta - np.float32(math.radians(a.n1_angle_deg)))  # curved: follows the SN arc
    n1 = _ellipse_sd((n1_along, r - n1_r, z), (0.0, 0.0, a.n1_z), a.n1_semi)
    img += np.float32(visibility * a.n1_contrast) * _inside(n1, edge)
    return {"nigrosome": n1, "nigra": sn, "red_nucleus": red_nucleus}


def _paint_surroundings(img: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> None:
    """Skull outside the brain, and both dentate nuclei and globi pallidi (wide field of view only)."""
    s = SURROUNDINGS
    _paint(img, -_ellipse_sd((px, py), s.brain_centre, s.brain_semi), s.outside)
    t0, t1 = (math.radians(t) for t in s.dentate_angles_deg)
    for mirror in (1.0, -1.0):
        x = np.float32(mirror) * px
        dx, dy, dz = (c - np.float32(v) for c, v in zip((x, py, pz), s.dentate_centre, strict=True))
        r = np.sqrt(dx * dx + dy * dy)
        theta = np.mod(np.arctan2(dy, dx) - np.float32(t0), np.float32(2 * math.pi))  # 0 at the band's first end
        span = np.float32(t1 - t0)
        along = np.float32(s.dentate_radius) * np.maximum(theta - span, np.float32(0.0)) * (theta < np.float32(4.0))
        _paint(img, np.maximum(r - np.float32(s.dentate_radius), np.abs(dz) - np.float32(s.dentate_z_half)), s.hilum)
        band = _box_sd(
            np.where(theta <= span, np.float32(-1.0), along + np.float32(0.01)),
            np.abs(r - np.float32(s.dentate_radius)) - np.float32(0.5 * s.dentate_thickness),
            np.abs(dz) - np.float32(s.dentate_z_half),
        )
        _paint(img, band, s.dentate)
        _paint(img, _ellipse_sd((x, py, pz), s.pallidus_centre, s.pallidus_semi), s.pallidus)


def _paint_veins(img: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray, rng: np.random.Generator) -> None:
    """Dark tubes (veins) through random points of the brain, tilted from the z axis (wide field of view only)."""
    s = SURROUNDINGS
    for _ in range(int(rng.integers(s.veins[0], s.veins[1] + 1))):
        while True:
            point = rng.uniform((-0.85 * s.brain_semi[0], -0.85 * s.brain_semi[1] + s.brain_centre[1], -10.0),
                                (0.85 * s.brain_semi[0], 0.85 * s.brain_semi[1] + s.brain_centre[1], 10.0))  # fmt: skip
            if math.hypot(point[0], point[1]) >= s.vein_clearance_mm:
                break
        tilt, azimuth = math.radians(rng.uniform(0.0, s.vein_tilt_deg)), rng.uniform(0.0, 2 * math.pi)
        u = np.array([math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), math.cos(tilt)])
        d = [c - np.float32(p) for c, p in zip((px, py, pz), point, strict=True)]
        cross = (d[1] * u[2] - d[2] * u[1], d[2] * u[0] - d[0] * u[2], d[0] * u[1] - d[1] * u[0])
        distance = np.sqrt(sum(c * c for c in cross))
        _paint(img, distance - np.float32(rng.uniform(*s.vein_radius_mm)), s.vein)


def _nigrosome_centre() -> np.ndarray:
    """Nigrosome-1 centre in the right side frame (mm)."""
    a = ANATOMY
    theta = math.radians(a.n1_angle_deg)
    r = a.sn_radius + a.n1_radius_offset
    return np.array([a.sn_arc_centre[0] + r * math.cos(theta), a.sn_arc_centre[1] + r * math.sin(theta), a.n1_z])


def _visibility(sbr: float, factor: float) -> float:
    """Nigrosome-1 visibility: per-subject factor times a sigmoid of the ipsilateral SBR."""
    v = VARIATION
    return factor / (1.0 + math.exp(-(sbr - v.visibility_sbr50) / v.visibility_width))


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx (radians)."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


@functools.cache
def _grid_mm(
    shape: tuple[int, int, int] = VOLUME_SHAPE, voxel: tuple[float, float, float] = VOXEL_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable voxel-centre coordinates (mm) relative to the volume centre."""
    x, y, z = (((np.arange(n) - 0.5 * (n - 1)) * s).astype(np.float32) for n, s in zip(shape, voxel, strict=True))
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _mm_to_voxel(
    g: np.ndarray, shape: tuple[int, int, int] = VOLUME_SHAPE, voxel: tuple[float, float, float] = VOXEL_SIZE
) -> np.ndarray:
    return g / np.asarray(voxel) + 0.5 * (np.asarray(shape) - 1)


def _laplacian_noise(rng: np.random.Generator, shape: tuple[int, int, int] = VOLUME_SHAPE) -> np.ndarray:
    """Unit-SD high-pass noise: the discrete 3D Laplacian of white noise (periodic boundaries)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    lap = np.float32(6.0) * white
    for axis in range(3):
        lap -= np.roll(white, 1, axis) + np.roll(white, -1, axis)
    return lap * np.float32(1.0 / math.sqrt(42.0))


def _bias_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = VOLUME_SHAPE,
    voxel: tuple[float, float, float] = VOXEL_SIZE,
    bias_coef: float = ACQUISITION.bias_coef,
) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random quadratic polynomial of the normalised coordinates."""
    u = [g / np.float32(0.5 * n * s) for g, n, s in zip(_grid_mm(shape, voxel), shape, voxel, strict=True)]
    terms = (u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2)
    coef = rng.uniform(-bias_coef, bias_coef, len(terms)).astype(np.float32)
    return np.exp(sum(c * t for c, t in zip(coef, terms, strict=True)))


def _annotate(
    true_voxel: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int, int] = VOLUME_SHAPE,
    acq: Acquisition = ACQUISITION,
    voxel: tuple[float, float, float] = VOXEL_SIZE,
) -> np.ndarray:
    """Rounded true centre plus a human clicking error; the patch around it (``PATCH_SHAPE`` at ``VOXEL_SIZE``, in
    ``voxel``-sized voxels) must fit the volume."""
    error = rng.integers(-acq.annotation_error_vox, acq.annotation_error_vox + 1, 3)
    p = acq.annotation_z_error_p
    error[2] = rng.choice((-1, 0, 1), p=(p / 2, 1 - p, p / 2))
    centroid = np.rint(true_voxel).astype(int) + error
    patch = np.ceil(np.asarray(PATCH_SHAPE) * np.asarray(VOXEL_SIZE) / np.asarray(voxel) - 1e-9).astype(int)
    low = centroid - patch // 2
    assert np.all(low >= 0) and np.all(low + patch <= np.asarray(shape)), (
        f"patch around centroid {centroid.tolist()} leaves the volume"
    )
    return centroid


# --- files -------------------------------------------------------------------------------------------------------
