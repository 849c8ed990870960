"""Label and image-model parameters of the synthetic nigral SMWI cohort (software testing only; no real patient).

1. Labels (:func:`sample_labels`): PD / non-PD mixture of patient-level striatal SBRs; right and left drawn around
   the patient level (right-left Pearson r ~ 0.93), clipped to [0.43, 6.84].
2. The image model's parameters: anatomy, per-subject variation, acquisition, fields of view and surroundings, as
   frozen dataclasses whose defaults are the cohort's (rendered by :mod:`bundle.synthetic.smwi_phantom`).

The rationale of every parameter: ``docs/synthetic_cohort.md``. Written by hand: no library simulates SMWI.
"""

from __future__ import annotations

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
    "Scanner",
    "SCANNER",
    "sample_labels",
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


@dataclass(frozen=True)
class Scanner:
    """How one site renders the same anatomy: voxel grid, slab angulation, tissue contrast and acquisition.

    The single-site cohorts use ``SCANNER`` (the module defaults); the multi-site cohort
    (:mod:`bundle.synthetic.site_model`) derives one per site. ``edge_width`` grows with the voxel size (partial
    volume: a larger voxel averages over a wider boundary); ``slab_tilt_deg`` turns the slab about the left-right axis.
    """

    voxel_size_mm: tuple[float, float, float]
    slab_tilt_deg: float
    anatomy: Anatomy
    acquisition: Acquisition
    visibility_factor: tuple[float, float]


LABELS = LabelModel()
ANATOMY = Anatomy()
VARIATION = SubjectVariation()
ACQUISITION = Acquisition()
SCANNER = Scanner(VOXEL_SIZE, 0.0, ANATOMY, ACQUISITION, VARIATION.visibility_factor)
SLAB = FieldOfView(VOLUME_SHAPE, None, VARIATION.rot_z_deg, VARIATION.rot_xy_deg, surroundings=False)
WIDE_FIELD = FieldOfView(shape=(208, 208, 36), shift_sd_mm=(10.0, 10.0, 2.0), rot_z_deg=10.0, rot_xy_deg=4.0,
                         surroundings=True)  # fmt: skip
SURROUNDINGS = Surroundings()


STRUCTURES = ("nigrosome", "nigra", "red_nucleus")
"""The structures whose masks :func:`simulate_subject` gives (``"{structure}_{side}"``): the nigrosome-1, the
substantia nigra and the red nucleus of each side, each where its painted shape's membership is at least 0.5."""


def sample_labels(n_patients: int, rng: np.random.Generator, model: LabelModel = LABELS) -> dict:
    """Draw per-patient striatal SBRs: arrays ``sbr_right``, ``sbr_left`` (3 decimals) and ``is_pd`` (bool).

    ``model``: the case mix (PD fraction, PD stage); the multi-site cohort gives each site its own."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    m = model
    is_pd = rng.random(n_patients) < m.pd_fraction
    pd_level = rng.normal(m.pd_mean, m.pd_sd, n_patients)
    non_pd_level = rng.normal(m.non_pd_mean, m.non_pd_sd, n_patients)
    level = np.where(is_pd, pd_level, non_pd_level)
    side_sd = np.where(is_pd, m.pd_side_sd, m.non_pd_side_sd)
    sides = level[:, None] + side_sd[:, None] * rng.standard_normal((n_patients, 2))
    sides = np.round(np.clip(sides, SBR_MIN, SBR_MAX), 3)
    return {"sbr_right": sides[:, 0].copy(), "sbr_left": sides[:, 1].copy(), "is_pd": is_pd}
