"""Image and label model of the synthetic nigral SMWI cohort (software testing only; no real patient).

1. Labels (:func:`sample_labels`): PD / non-PD mixture of patient-level striatal SBRs; right and left drawn around
   the patient level (right-left Pearson r ~ 0.93), clipped to [0.43, 6.84].
2. Image (:func:`simulate_subject`): axial 3D SMWI slab through the midbrain, 0.5 x 0.5 x 1 mm, RAS storage order:
   midbrain with CSF rim, cerebral peduncles, hypointense substantia nigra (SN), red nuclei and the hyperintense
   nigrosome-1, whose visibility is a sigmoid of the ipsilateral SBR; per-subject pose and size variation, bias
   field, high-pass SMWI processing noise, Rician noise and scanner gain.
3. Annotation: nigrosome-1 centre of each side in voxel indices with a +-1 voxel clicking error; the 50 x 50 x 20
   patch around it always lies inside the volume.

The rationale of every parameter: ``docs/synthetic_cohort.md``. Written by hand: no library simulates SMWI.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundle.constants import DEFAULT_SBR_MAX, PATCH_SIZE, TARGET_SPACING

__all__ = [
    "STRUCTURES",
    "SBR_MAX",
    "VOLUME_SHAPE",
    "VOXEL_SIZE",
    "LABELS",
    "ANATOMY",
    "VARIATION",
    "ACQUISITION",
    "FieldOfView",
    "SLAB",
    "WIDE_FIELD",
    "SURROUNDINGS",
    "RenderedSubject",
    "render_subject",
    "sample_labels",
    "simulate_subject",
]

SBR_MAX = DEFAULT_SBR_MAX
SBR_MIN = 0.43
VOLUME_SHAPE = (112, 96, 30)  # voxels [x: right, y: anterior, z: superior]; 56 x 48 x 30 mm
VOXEL_SIZE = TARGET_SPACING  # mm, the clinical SMWI protocol
PATCH_SHAPE = PATCH_SIZE  # voxels, the regressor's input patch


@dataclass(frozen=True)
class LabelModel:
    """Patient-level SBR mixture; each side is the patient level plus an independent deviation."""

    pd_fraction: float = 0.78
    pd_mean: float = 2.3
    pd_sd: float = 0.85
    non_pd_mean: float = 4.3
    non_pd_sd: float = 1.1
    pd_side_sd: float = 0.36  # PD is often asymmetric
    non_pd_side_sd: float = 0.22


@dataclass(frozen=True)
class Anatomy:
    """Mean anatomy in the subject frame (mm; origin mid-midbrain; x right, y anterior, z superior).

    Lateral structures are given for the right side; the left side is their mirror image.
    Intensities are relative to midbrain tissue (1.0) before bias, noise and gain.
    """

    edge_width: float = 0.35  # sigmoid width of every structure boundary
    body_centre: tuple[float, float] = (0.0, -1.5)  # midbrain tegmentum + tectum (ellipse)
    body_semi: tuple[float, float] = (13.5, 10.5)
    peduncle_centre: tuple[float, float] = (7.0, 4.5)  # cerebral peduncle (tilted ellipse)
    peduncle_semi: tuple[float, float] = (5.0, 8.0)  # across, along
    peduncle_tilt_deg: float = 30.0  # long axis turned anterolaterally
    fossa_centre: tuple[float, float] = (0.0, 11.0)  # interpeduncular fossa (CSF notch)
    fossa_semi: tuple[float, float] = (2.5, 6.5)
    aqueduct_centre: tuple[float, float] = (0.0, -7.5)
    aqueduct_radius: float = 1.0
    cistern_width: tuple[float, float] = (2.0, 4.0)  # ambient cistern CSF rim, per-subject range
    sn_arc_centre: tuple[float, float] = (3.0, -3.0)  # SN: band along an arc convex anterolaterally
    sn_radius: float = 8.1
    sn_angles_deg: tuple[float, float] = (0.0, 76.0)  # posterolateral end .. anteromedial end
    sn_thickness: float = 3.0
    sn_z_half: float = 4.0
    rn_centre: tuple[float, float, float] = (4.0, -3.5, 1.5)  # red nucleus
    rn_semi: tuple[float, float, float] = (3.0, 3.0, 3.0)
    n1_angle_deg: float = 18.0  # nigrosome-1 in the dorsolateral third of the SN arc
    n1_radius_offset: float = -0.2  # slightly dorsal within the band
    n1_z: float = -0.5
    n1_semi: tuple[float, float, float] = (2.0, 0.8, 2.0)  # along the SN, across it, z
    tissue: float = 1.0
    background: float = 0.95  # medial temporal lobe / cerebellum around the cisterns
    csf: float = 1.35
    crus: float = 0.9  # crus cerebri white matter
    rn: float = 0.45
    sn: float = 0.56
    n1_contrast: float = 0.45  # added to the SN intensity at full visibility


@dataclass(frozen=True)
class SubjectVariation:
    """Per-subject and per-side variation (uniform half-ranges unless a range is given)."""

    scale: float = 0.08
    shift_mm: float = 2.0
    rot_z_deg: float = 6.0
    rot_xy_deg: float = 3.0
    side_shift_mm: float = 0.5
    side_scale: float = 0.05
    visibility_sbr50: float = 3.4  # SBR at half nigrosome-1 visibility
    visibility_width: float = 0.6  # sigmoid width (SBR units)
    visibility_factor: tuple[float, float] = (0.85, 1.0)  # per-subject range
    degeneration_sbr: tuple[float, float] = (0.5, 4.5)  # SBR mapped to nigral degeneration 1 .. 0
    sn_darkening: float = 0.06  # SN intensity drop at full degeneration (iron)
    sn_thinning: float = 0.12  # relative SN thinning at full degeneration (atrophy)


@dataclass(frozen=True)
class Acquisition:
    """Scanner, reconstruction and annotation effects."""

    scanner_offset_mm: float = 3.0  # half-range of the affine translation offset
    bias_coef: float = 0.06  # half-range of each coefficient of the quadratic log-bias
    processing_noise_sd: float = 0.15  # high-pass SMWI processing noise (Laplacian of white noise)
    rician_sigma: tuple[float, float] = (0.08, 0.12)  # per-subject range, fraction of tissue
    gain: tuple[float, float] = (250.0, 900.0)
    annotation_error_vox: int = 1  # in-plane clicking error, uniform in {-1, 0, 1}
    annotation_z_error_p: float = 0.3  # probability of a one-slice error in z


@dataclass(frozen=True)
class FieldOfView:
    """Where the midbrain sits in the volume: the pose of the subject and what surrounds the midbrain.

    ``SLAB`` (generator 1.x) is a 56 x 48 x 30 mm midbrain slab with +-2 mm pose jitter; ``WIDE_FIELD``
    (generator 2.x) is a 104 x 104 x 36 mm axial slab through the head, the subject position drawn from a normal
    distribution (SD ``shift_sd_mm``, truncated at 2.5 SD so both patches stay inside) and rotated by up to
    ``rot_z_deg`` / ``rot_xy_deg``, with iron-rich look-alikes around the midbrain (:class:`Surroundings`).
    """

    shape: tuple[int, int, int]
    shift_sd_mm: tuple[float, float, float] | None  # None: VARIATION.shift_mm uniform (the slab)
    rot_z_deg: float
    rot_xy_deg: float
    surroundings: bool

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, VOXEL_SIZE, strict=True))


@dataclass(frozen=True)
class Surroundings:
    """Structures around the midbrain in a wide field of view (subject frame, mm; right side, mirrored left).

    The dentate nucleus (a hypointense C-shaped band around brighter white matter) and the globus pallidus are the
    iron-rich nuclei that look most like the nigra on SMWI; veins are dark tubes at random places.
    """

    brain_centre: tuple[float, float] = (0.0, -6.0)
    brain_semi: tuple[float, float] = (66.0, 78.0)  # the head at midbrain level: wider than the field of view
    outside: float = 0.35  # skull and scalp, dark on SMWI
    dentate_centre: tuple[float, float, float] = (13.0, -33.0, -6.0)
    dentate_radius: float = 6.5
    dentate_angles_deg: tuple[float, float] = (70.0, 330.0)  # open anteromedially
    dentate_thickness: float = 2.2
    dentate_z_half: float = 5.0
    dentate: float = 0.55
    hilum: float = 1.05  # white matter inside the dentate band
    pallidus_centre: tuple[float, float, float] = (18.0, 14.0, 11.0)
    pallidus_semi: tuple[float, float, float] = (3.0, 7.0, 4.5)
    pallidus: float = 0.62
    veins: tuple[int, int] = (4, 8)  # per-subject count range
    vein_radius_mm: tuple[float, float] = (0.4, 0.8)
    vein_tilt_deg: float = 30.0  # from the z axis
    vein_clearance_mm: float = 18.0  # no vein closer than this (in-plane) to the midbrain centre
    vein: float = 0.6


LABELS = LabelModel()
ANATOMY = Anatomy()
VARIATION = SubjectVariation()
ACQUISITION = Acquisition()
SLAB = FieldOfView(VOLUME_SHAPE, None, VARIATION.rot_z_deg, VARIATION.rot_xy_deg, surroundings=False)
WIDE_FIELD = FieldOfView(shape=(208, 208, 36), shift_sd_mm=(10.0, 10.0, 2.0), rot_z_deg=10.0, rot_xy_deg=4.0,
                         surroundings=True)  # fmt: skip
SURROUNDINGS = Surroundings()


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


STRUCTURES = ("nigrosome", "nigra", "red_nucleus")
"""The structures whose masks :func:`simulate_subject` gives (``"{structure}_{side}"``): the nigrosome-1, the
substantia nigra and the red nucleus of each side, each where its painted shape's membership is at least 0.5."""


def sample_labels(n_patients: int, rng: np.random.Generator) -> dict:
    """Draw per-patient striatal SBRs: arrays ``sbr_right``, ``sbr_left`` (3 decimals) and ``is_pd`` (bool)."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    m = LABELS
    is_pd = rng.random(n_patients) < m.pd_fraction
    pd_level = rng.normal(m.pd_mean, m.pd_sd, n_patients)
    non_pd_level = rng.normal(m.non_pd_mean, m.non_pd_sd, n_patients)
    level = np.where(is_pd, pd_level, non_pd_level)
    side_sd = np.where(is_pd, m.pd_side_sd, m.non_pd_side_sd)
    sides = level[:, None] + side_sd[:, None] * rng.standard_normal((n_patients, 2))
    sides = np.round(np.clip(sides, SBR_MIN, SBR_MAX), 3)
    return {"sbr_right": sides[:, 0].copy(), "sbr_left": sides[:, 1].copy(), "is_pd": is_pd}


def simulate_subject(
    sbr_right: float, sbr_left: float, rng: np.random.Generator, field: FieldOfView = SLAB, masks: bool = False
) -> RenderedSubject:
    """Render one synthetic SMWI volume of ``field`` from its right/left SBRs and return it with its ground truth.

    With ``SLAB`` the output is that of generator 1.1.0, bit for bit. ``masks`` adds the structure masks (no random
    numbers are drawn for them, so the volume is the same either way)."""
    a, var, acq = ANATOMY, VARIATION, ACQUISITION
    shape = field.shape
    scale = 1.0 + rng.uniform(-var.scale, var.scale)
    if field.shift_sd_mm is None:
        shift = rng.uniform(-var.shift_mm, var.shift_mm, 3)
    else:
        sd = np.asarray(field.shift_sd_mm)
        shift = np.clip(rng.normal(0.0, sd), -2.5 * sd, 2.5 * sd)
    rot = _rotation(*np.radians(rng.uniform(-1.0, 1.0, 3) * [field.rot_xy_deg, field.rot_xy_deg, field.rot_z_deg]))
    side_shift = rng.uniform(-var.side_shift_mm, var.side_shift_mm, (2, 3))
    side_scale = 1.0 + rng.uniform(-var.side_scale, var.side_scale, 2)
    factor = rng.uniform(*var.visibility_factor)
    cistern = rng.uniform(*a.cistern_width)
    visibility = (_visibility(sbr_right, factor), _visibility(sbr_left, factor))

    # subject-frame coordinates p of every voxel centre g, where g = scale * rot @ p + shift
    gx, gy, gz = (g - np.float32(s) for g, s in zip(_grid_mm(shape), shift, strict=True))
    inv = (rot.T / scale).astype(np.float32)
    px, py, pz = (inv[i, 0] * gx + inv[i, 1] * gy + inv[i, 2] * gz for i in range(3))

    midbrain = np.minimum(_ellipse_sd((px, py), a.body_centre, a.body_semi), _peduncle_sd(px, py))
    midbrain = np.minimum(midbrain, _peduncle_sd(-px, py))
    midbrain = np.maximum(midbrain, -_ellipse_sd((px, py), a.fossa_centre, a.fossa_semi))
    img = np.full(px.shape, a.background, np.float32)
    if field.surroundings:
        _paint_surroundings(img, px, py, pz)
    _paint(img, midbrain - np.float32(cistern), a.csf)
    _paint(img, midbrain, a.tissue)

    n1_side_frame = _nigrosome_centre()
    true_voxels = []
    structure_masks: dict[str, np.ndarray] = {}
    for side, (mirror, sbr) in enumerate(((1.0, sbr_right), (-1.0, sbr_left))):
        sx, sy, sz = side_shift[side]
        k = np.float32(1.0 / side_scale[side])
        x = (np.float32(mirror) * px - np.float32(sx)) * k
        shapes = _paint_side(img, x, (py - np.float32(sy)) * k, (pz - np.float32(sz)) * k, sbr, visibility[side])
        if masks:
            name = ("right", "left")[side]
            structure_masks |= {f"{structure}_{name}": shapes[structure] < 0 for structure in STRUCTURES}
        n1 = side_shift[side] + side_scale[side] * n1_side_frame
        n1[0] *= mirror
        true_voxels.append(_mm_to_voxel(scale * rot @ n1 + shift, shape))
    _paint(img, _ellipse_sd((px, py), a.aqueduct_centre, (a.aqueduct_radius,) * 2), a.csf)
    if field.surroundings:
        _paint_veins(img, px, py, pz, rng)

    img += np.float32(acq.processing_noise_sd) * _laplacian_noise(rng, shape)
    img *= _bias_field(rng, shape)
    sigma = np.float32(rng.uniform(*acq.rician_sigma))
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt(real * real + imag * imag) * np.float32(rng.uniform(*acq.gain))
    volume = np.rint(img).clip(0, np.iinfo(np.int16).max).astype(np.int16)

    affine = np.diag([*VOXEL_SIZE, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * VOXEL_SIZE
    affine[:3, 3] += rng.uniform(-acq.scanner_offset_mm, acq.scanner_offset_mm, 3)
    return RenderedSubject(
        volume=volume,
        affine=affine,
        centroid_right=_annotate(true_voxels[0], rng, shape),
        centroid_left=_annotate(true_voxels[1], rng, shape),
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


def _inside(sd: np.ndarray) -> np.ndarray:
    """Soft membership (0..1) of a signed distance in mm, negative inside."""
    return 0.5 * (1.0 - np.tanh(sd * np.float32(0.5 / ANATOMY.edge_width)))


def _paint(img: np.ndarray, sd: np.ndarray, value: float) -> None:
    """Blend ``value`` into ``img`` inside the soft shape given by its signed distance ``sd``."""
    img += (np.float32(value) - img) * _inside(sd)


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
    img: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, sbr: float, visibility: float
) -> dict[str, np.ndarray]:
    """Paint crus cerebri, red nucleus, SN and nigrosome-1 of one side, given side-frame coordinates; return the
    signed distances (mm, negative inside) of the red nucleus, the nigra and the nigrosome-1 (STRUCTURES)."""
    a, var = ANATOMY, VARIATION
    lo, hi = var.degeneration_sbr
    degeneration = min(max((hi - sbr) / (hi - lo), 0.0), 1.0)
    dx, dy = x - np.float32(a.sn_arc_centre[0]), y - np.float32(a.sn_arc_centre[1])
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)

    _paint(img, np.maximum(_peduncle_sd(x, y), np.float32(a.sn_radius + 0.5 * a.sn_thickness + 0.5) - r), a.crus)
    red_nucleus = _ellipse_sd((x, y, z), a.rn_centre, a.rn_semi)
    _paint(img, red_nucleus, a.rn)

    t0, t1 = (math.radians(t) for t in a.sn_angles_deg)
    along = np.float32(a.sn_radius) * (theta - np.float32(0.5 * (t0 + t1)))  # arc length from the SN middle
    thickness = a.sn_thickness * (1.0 - var.sn_thinning * degeneration)
    sn = _box_sd(
        np.abs(along) - np.float32(0.5 * a.sn_radius * (t1 - t0)),
        np.abs(r - np.float32(a.sn_radius)) - np.float32(0.5 * thickness),
        np.abs(z) - np.float32(a.sn_z_half),
    )
    _paint(img, sn, a.sn - var.sn_darkening * degeneration)

    n1_r = np.float32(a.sn_radius + a.n1_radius_offset)
    n1_along = n1_r * (theta - np.float32(math.radians(a.n1_angle_deg)))  # curved: follows the SN arc
    n1 = _ellipse_sd((n1_along, r - n1_r, z), (0.0, 0.0, a.n1_z), a.n1_semi)
    img += np.float32(visibility * a.n1_contrast) * _inside(n1)
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
def _grid_mm(shape: tuple[int, int, int] = VOLUME_SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable voxel-centre coordinates (mm) relative to the volume centre."""
    x, y, z = (((np.arange(n) - 0.5 * (n - 1)) * s).astype(np.float32) for n, s in zip(shape, VOXEL_SIZE, strict=True))
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _mm_to_voxel(g: np.ndarray, shape: tuple[int, int, int] = VOLUME_SHAPE) -> np.ndarray:
    return g / np.asarray(VOXEL_SIZE) + 0.5 * (np.asarray(shape) - 1)


def _laplacian_noise(rng: np.random.Generator, shape: tuple[int, int, int] = VOLUME_SHAPE) -> np.ndarray:
    """Unit-SD high-pass noise: the discrete 3D Laplacian of white noise (periodic boundaries)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    lap = np.float32(6.0) * white
    for axis in range(3):
        lap -= np.roll(white, 1, axis) + np.roll(white, -1, axis)
    return lap * np.float32(1.0 / math.sqrt(42.0))


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int] = VOLUME_SHAPE) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random quadratic polynomial of the normalised coordinates."""
    u = [g / np.float32(0.5 * n * s) for g, n, s in zip(_grid_mm(shape), shape, VOXEL_SIZE, strict=True)]
    terms = (u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2)
    coef = rng.uniform(-ACQUISITION.bias_coef, ACQUISITION.bias_coef, len(terms)).astype(np.float32)
    return np.exp(sum(c * t for c, t in zip(coef, terms, strict=True)))


def _annotate(
    true_voxel: np.ndarray, rng: np.random.Generator, shape: tuple[int, int, int] = VOLUME_SHAPE
) -> np.ndarray:
    """Rounded true centre plus a human clicking error; the patch around it must fit the volume."""
    acq = ACQUISITION
    error = rng.integers(-acq.annotation_error_vox, acq.annotation_error_vox + 1, 3)
    p = acq.annotation_z_error_p
    error[2] = rng.choice((-1, 0, 1), p=(p / 2, 1 - p, p / 2))
    centroid = np.rint(true_voxel).astype(int) + error
    low = centroid - np.asarray(PATCH_SHAPE) // 2
    assert np.all(low >= 0) and np.all(low + PATCH_SHAPE <= np.asarray(shape)), (
        f"patch around centroid {centroid.tolist()} leaves the volume"
    )
    return centroid


# --- files -------------------------------------------------------------------------------------------------------
