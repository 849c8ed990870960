"""Site model of the multi-site synthetic cohort: how hospitals differ (software testing only; no real patient).

Each :class:`SiteProfile` states a site's MRI protocol, its SMWI processing, its annotator, its SPECT camera, its
case mix and its MRI-SPECT time gap. :func:`site_scanner` turns the MRI side into the phantom's :class:`Scanner`
(voxel grid, slab angulation, contrast, noise); :func:`spect_sbr` turns the SBR the nigra shows at the MRI into
the SBR the site's SPECT reports (progression over the time gap, then the camera). The causes and the parameter
ranges are documented in ``docs/synthetic_cohort.md`` ("Multi-site cohort"). The values are chosen inside
published ranges, never fitted to any result. Written by hand: no library simulates site effects of SMWI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from bundle.synthetic.smwi_model import (
    ACQUISITION,
    ANATOMY,
    LABELS,
    SBR_MAX,
    SBR_MIN,
    SLAB,
    VARIATION,
    VOXEL_SIZE,
    FieldOfView,
    LabelModel,
    Scanner,
)

__all__ = ["SiteProfile", "SITES", "site_scanner", "site_field_of_view", "site_labels", "spect_sbr"]

REFERENCE_FIELD_T = 3.0  # the demo cohort's scanner
REFERENCE_ECHO_MS = 20.0
REFERENCE_MASK_POWER = 4  # SMWI mask exponent m of the demo cohort (Nam et al. 2017)


@dataclass(frozen=True)
class SiteProfile:
    """One site: MRI protocol, SMWI processing, annotator, SPECT camera, case mix and MRI-SPECT gap."""

    name: str
    field_strength_t: float  # 1.5 or 3
    echo_time_ms: float  # phase contrast grows with B0 x TE
    voxel_size_mm: tuple[float, float, float]
    slab_tilt_deg: float  # slab angulation about the left-right axis
    mask_power: int  # SMWI susceptibility-mask exponent m: stronger weighting, more processing noise
    annotator_error_vox: int  # in-plane clicking error, uniform in {-e .. e} voxels of the site grid
    annotator_z_error_p: float  # probability of a one-slice error
    camera_scale: float  # SPECT SBR_site = scale x SBR + offset (camera / reconstruction)
    camera_offset: float
    pd_fraction: float  # case mix
    pd_mean_sbr: float  # disease stage of the PD patients (lower = later)
    gap_months: tuple[float, float]  # SPECT date minus MRI date, uniform range
    pd_decline_per_year: tuple[float, float] = (0.04, 0.10)  # relative striatal SBR loss per year, PD
    control_decline_per_year: float = 0.005  # ageing, non-PD


SITES: tuple[SiteProfile, ...] = (
    SiteProfile("site1", 3.0, 20.0, (0.5, 0.5, 1.0), 0.0, 4, 1, 0.3, 1.00, 0.00, 0.78, 2.3, (-1.0, 1.0)),
    SiteProfile("site2", 3.0, 17.5, (0.55, 0.55, 1.2), 8.0, 5, 1, 0.5, 0.88, 0.12, 0.70, 2.6, (0.0, 6.0)),
    SiteProfile("site3", 1.5, 30.0, (0.6, 0.6, 1.5), -6.0, 4, 2, 0.4, 1.12, -0.10, 0.85, 2.0, (0.0, 12.0)),
    SiteProfile("site4", 1.5, 24.0, (0.7, 0.7, 1.4), 12.0, 3, 1, 0.3, 0.92, 0.25, 0.60, 2.5, (-6.0, 12.0)),
)
"""The default four sites (patients 150 / 100 / 70 / 47): two 3 T and two 1.5 T hospitals."""


def susceptibility_contrast(site: SiteProfile) -> float:
    """Iron contrast of the site's SMWI relative to the demo's: phase ~ B0 x TE, times the mask power m / 4."""
    phase = (site.field_strength_t * site.echo_time_ms) / (REFERENCE_FIELD_T * REFERENCE_ECHO_MS)
    return phase * site.mask_power / REFERENCE_MASK_POWER


def site_scanner(site: SiteProfile) -> Scanner:
    """The phantom's :class:`Scanner` for ``site``.

    - Iron contrast k (:func:`susceptibility_contrast`) scales how far SN and red nucleus fall below tissue and the
      nigrosome-1 hyperintensity.
    - Thermal noise: sigma x (3 T / B0) x (V_ref / V), V the voxel volume (SNR ~ B0 x V).
    - SMWI processing noise: x m / 4 (the mask amplifies phase noise).
    - Bias field: coefficient x B0 / 3 T (transmit-field inhomogeneity grows with B0).
    - Partial volume: boundary width x (V / V_ref)^(1/3).
    """
    k = susceptibility_contrast(site)
    volume_ratio = math.prod(VOXEL_SIZE) / math.prod(site.voxel_size_mm)
    b0 = site.field_strength_t / REFERENCE_FIELD_T
    a = ANATOMY
    anatomy = replace(
        a,
        sn=a.tissue - k * (a.tissue - a.sn),
        rn=a.tissue - k * (a.tissue - a.rn),
        n1_contrast=k * a.n1_contrast,
        edge_width=a.edge_width * volume_ratio ** (-1.0 / 3.0),
    )
    acq = ACQUISITION
    acquisition = replace(
        acq,
        rician_sigma=tuple(s * volume_ratio / b0 for s in acq.rician_sigma),
        processing_noise_sd=acq.processing_noise_sd * site.mask_power / REFERENCE_MASK_POWER,
        bias_coef=acq.bias_coef * b0,
        annotation_error_vox=site.annotator_error_vox,
        annotation_z_error_p=site.annotator_z_error_p,
    )
    return Scanner(site.voxel_size_mm, site.slab_tilt_deg, anatomy, acquisition, VARIATION.visibility_factor)


def site_field_of_view(site: SiteProfile) -> FieldOfView:
    """The demo's midbrain slab (56 x 48 x 30 mm) on the site's voxel grid."""
    shape = tuple(round(e / v) for e, v in zip(SLAB.extent_mm, site.voxel_size_mm, strict=True))
    return replace(SLAB, shape=shape)


def site_labels(site: SiteProfile) -> LabelModel:
    """The site's case mix: its PD fraction and the mean SBR (stage) of its PD patients."""
    return replace(LABELS, pd_fraction=site.pd_fraction, pd_mean=site.pd_mean_sbr)


def spect_sbr(
    sbr_at_mri: np.ndarray, is_pd: np.ndarray, site: SiteProfile, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SBR the site's SPECT reports, given the SBR at the MRI ([n, 2], right/left) and the diagnosis.

    SBR_spect = clip(a x SBR_mri x (1 - r)^(gap / 12) + b, 0.43, 6.84), rounded to 3 decimals: gap in months
    (SPECT minus MRI, drawn per patient from ``site.gap_months``), r the patient's yearly decline (PD: uniform in
    ``site.pd_decline_per_year``; others ``site.control_decline_per_year``), a and b the camera's. Labels only: the
    image shows the nigra at the MRI. Returns (SBR_spect [n, 2], gap_months [n], decline [n])."""
    n = len(is_pd)
    gap = rng.uniform(*site.gap_months, n)
    decline = np.where(is_pd, rng.uniform(*site.pd_decline_per_year, n), site.control_decline_per_year)
    progressed = np.asarray(sbr_at_mri) * ((1.0 - decline) ** (gap / 12.0))[:, None]
    measured = site.camera_scale * progressed + site.camera_offset
    return np.round(np.clip(measured, SBR_MIN, SBR_MAX), 3), gap, decline
