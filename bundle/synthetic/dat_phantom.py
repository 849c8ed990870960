"""Synthetic DaT-SPECT and DAT-PET volumes in the template space, for software testing only (not real patients).

Model (documented with its sources and simplifications in ``bundles/dat_spect/docs/README.md`` and
``bundles/datnet/docs/README.md``): non-specific uptake 1 in the brain (occipital cortex = reference), 0.15 outside;
specific binding in caudate and putamen per side, spread by a loss pattern; low extrastriatal specific binding in
insula (following the ipsilateral putamen), thalamus and midbrain; scanner blur (Gaussian, FWHM) and Poisson counts.
The striatal binding of each side is solved so that the blurred volume's measured SBR (:func:`measured_sbr`, the
DATquant definition) equals the label exactly before the counts noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from bundle.dat.binding import binding_ratio
from bundle.dat.template import STRIATAL, VOXEL_MM, region_masks

__all__ = ["Scanner", "SPECT", "PET", "LossPattern", "PATTERNS", "GROUPS", "HEALTHY_SBR", "measured_sbr",
           "striatal_binding", "simulate_dat"]  # fmt: skip

HEALTHY_SBR = 4.3
"""Mean striatal SBR of the non-PD patients in the label model (``bundle.synthetic.smwi_model.LABELS``)."""
OUTSIDE_BRAIN = 0.15
GROUPS = ("HC", "IPD", "MSA", "PSP")


@dataclass(frozen=True)
class Scanner:
    """Resolution (FWHM, mm) and mean counts per voxel of the reference region."""

    fwhm_mm: float
    reference_counts: float


SPECT = Scanner(fwhm_mm=12.0, reference_counts=150.0)  # 123I-FP-CIT SPECT after filtered back-projection
PET = Scanner(fwhm_mm=11.0, reference_counts=400.0)  # [11C]CFT PET after the DAT-Net paper's 10 mm smoothing


@dataclass(frozen=True)
class LossPattern:
    """How binding loss spreads over a side's striatum (relative weights per part) and the extrastriatal regions'
    binding relative to healthy (thalamus, midbrain)."""

    caudate: float
    putamen_anterior: float
    putamen_posterior: float
    thalamus: float = 1.0
    midbrain: float = 1.0
    symmetric: bool = False


PATTERNS: dict[str, LossPattern] = {
    "spect": LossPattern(0.5, 1.0, 1.5),  # putamen before caudate, posterior first
    "HC": LossPattern(0.5, 1.0, 1.5),
    "IPD": LossPattern(0.3, 0.9, 1.7, midbrain=0.6),  # asymmetric, posterior putamen
    "MSA": LossPattern(0.25, 1.3, 1.3, thalamus=0.6, symmetric=True),  # uniform putamen loss
    "PSP": LossPattern(1.0, 1.0, 1.0, thalamus=0.5, midbrain=0.5, symmetric=True),  # caudate and putamen alike
}
"""Loss patterns: the SPECT cohort's and one per DAT-Net diagnosis group."""


def striatal_binding(sbr: float, pattern: LossPattern) -> dict[str, float]:
    """Specific binding per striatal part of one side whose (volume-weighted) striatal SBR is ``sbr``: the loss
    against :data:`HEALTHY_SBR` is spread by the pattern's weights, then scaled so the mean is ``sbr``."""
    masks = region_masks()
    loss = float(np.clip(1.0 - sbr / HEALTHY_SBR, 0.0, 0.95))
    binding = {part: max(0.02, 1.0 - loss * getattr(pattern, part)) for part in STRIATAL}
    volumes = {part: float(masks[f"{part}_right"].sum()) for part in STRIATAL}
    mean = sum(binding[p] * volumes[p] for p in STRIATAL) / sum(volumes.values())
    return {part: value * sbr / mean for part, value in binding.items()}


def measured_sbr(volume: np.ndarray, side: str) -> float:
    """DATquant-style SBR of one side: (mean striatum - mean occipital) / mean occipital, template masks."""
    masks = region_masks()
    return binding_ratio(volume, masks[f"striatum_{side}"], masks["occipital"])


def _blur(image: np.ndarray, scanner: Scanner) -> np.ndarray:
    return gaussian_filter(image, scanner.fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / VOXEL_MM, mode="constant")


def simulate_dat(
    sbr: Mapping[str, float], pattern: LossPattern, scanner: Scanner, rng: np.random.Generator
) -> np.ndarray:
    """One volume [*template.SHAPE] in counts (float32) for per-side striatal SBRs ``{"right": .., "left": ..}``."""
    masks = region_masks()
    parts = {side: striatal_binding(sbr[side], pattern) for side in ("right", "left")}
    base = np.where(masks["brain"], 1.0, OUTSIDE_BRAIN)
    for side in ("right", "left"):
        putamen = np.mean([parts[side][p] for p in ("putamen_anterior", "putamen_posterior")])
        base = base + masks[f"insula_{side}"] * 0.08 * putamen
        base = base + masks[f"thalamus_{side}"] * 0.35 * pattern.thalamus * min(1.0, 0.5 + sbr[side] / HEALTHY_SBR)
    base = base + masks["midbrain"] * 0.5 * pattern.midbrain
    blurred_base = _blur(base, scanner)
    specific = {}
    for side in ("right", "left"):
        specific[side] = _blur(sum(masks[f"{p}_{side}"] * parts[side][p] for p in STRIATAL), scanner)
    # measured SBR of each side is linear in the two sides' scale factors: solve the 2 x 2 system exactly
    occipital = masks["occipital"]
    matrix, rhs = np.zeros((2, 2)), np.zeros(2)
    for row, side in enumerate(("right", "left")):
        target = 1.0 + sbr[side]
        voi = masks[f"striatum_{side}"]
        rhs[row] = target * blurred_base[occipital].mean() - blurred_base[voi].mean()
        for col, other in enumerate(("right", "left")):
            matrix[row, col] = specific[other][voi].mean() - target * specific[other][occipital].mean()
    scale = np.linalg.solve(matrix, rhs)
    image = blurred_base + scale[0] * specific["right"] + scale[1] * specific["left"]
    dose = rng.uniform(0.7, 1.3)  # injected dose and timing: a global scale the reference normalisation removes
    return rng.poisson(np.clip(image, 0, None) * scanner.reference_counts * dose).astype(np.float32)
