"""The template space of the synthetic DaT cohorts: a 4 mm grid around an MNI-like origin and the regions of the
generator (ellipsoids at approximate MNI coordinates, in mm; a simplification of a real atlas, see
``bundles/dat_spect/docs/README.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["SHAPE", "VOXEL_MM", "AFFINE", "REGIONS", "STRIATAL", "region_masks", "striatal_box", "grid_mm"]

VOXEL_MM = 4.0
SHAPE = (36, 44, 36)  # 144 x 176 x 144 mm (the LRP paper: 71 x 90 x 72 voxels of 2 mm)
ORIGIN_MM = (-70.0, -104.0, -62.0)  # world (RAS) position of voxel (0, 0, 0)
AFFINE = np.array([[VOXEL_MM, 0, 0, ORIGIN_MM[0]], [0, VOXEL_MM, 0, ORIGIN_MM[1]],
                   [0, 0, VOXEL_MM, ORIGIN_MM[2]], [0, 0, 0, 1.0]])  # fmt: skip


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid in world mm (x > 0 is the right hemisphere, RAS)."""

    centre: tuple[float, float, float]
    semi: tuple[float, float, float]


def _sides(name: str, centre: tuple[float, float, float], semi: tuple[float, float, float]) -> dict[str, Ellipsoid]:
    x, y, z = centre
    return {f"{name}_right": Ellipsoid((abs(x), y, z), semi), f"{name}_left": Ellipsoid((-abs(x), y, z), semi)}


REGIONS: dict[str, Ellipsoid] = {
    "brain": Ellipsoid((0.0, -17.0, 8.0), (66.0, 84.0, 60.0)),
    **_sides("caudate", (13.0, 12.0, 10.0), (6.0, 11.0, 10.0)),
    **_sides("putamen_anterior", (25.0, 8.0, 2.0), (6.0, 10.0, 9.0)),
    **_sides("putamen_posterior", (28.0, -10.0, 0.0), (6.0, 9.0, 8.0)),
    **_sides("thalamus", (11.0, -18.0, 6.0), (7.0, 11.0, 7.0)),
    **_sides("insula", (39.0, 2.0, 2.0), (4.0, 14.0, 10.0)),
    "midbrain": Ellipsoid((0.0, -26.0, -10.0), (8.0, 8.0, 7.0)),
    "occipital": Ellipsoid((0.0, -86.0, 8.0), (38.0, 12.0, 24.0)),
}
"""Every region of the generator; the striatum of a side is its caudate and its two putamen parts."""
STRIATAL = ("caudate", "putamen_anterior", "putamen_posterior")
STRIATAL_BOX_MM = ((-36.0, 36.0), (-32.0, 32.0), (-14.0, 26.0))
"""The "striatum only" crop (the LRP paper's Fig. 6): both striata with a margin against spill-out; it cuts the
thalamus and the medial insula, as the paper's box did."""


def grid_mm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World coordinates (mm) of every voxel centre, each [*SHAPE]."""
    axes = [ORIGIN_MM[a] + VOXEL_MM * np.arange(SHAPE[a]) for a in range(3)]
    return tuple(np.meshgrid(*axes, indexing="ij"))  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _masks() -> dict[str, np.ndarray]:
    x, y, z = grid_mm()
    masks = {}
    for name, e in REGIONS.items():
        d = sum(((c - m) / s) ** 2 for c, m, s in zip((x, y, z), e.centre, e.semi, strict=True))
        masks[name] = d <= 1.0
    for side in ("right", "left"):
        masks[f"putamen_{side}"] = masks[f"putamen_anterior_{side}"] | masks[f"putamen_posterior_{side}"]
        masks[f"striatum_{side}"] = masks[f"putamen_{side}"] | masks[f"caudate_{side}"]
    masks["striatum"] = masks["striatum_right"] | masks["striatum_left"]
    masks["putamen"] = masks["putamen_right"] | masks["putamen_left"]
    masks["insula"] = masks["insula_right"] | masks["insula_left"]
    masks["thalamus"] = masks["thalamus_right"] | masks["thalamus_left"]
    masks["reference"] = masks["brain"] & ~(masks["striatum"] | masks["thalamus"] | masks["midbrain"])
    return masks


def region_masks() -> dict[str, np.ndarray]:
    """Boolean masks [*SHAPE] of every region, plus unions: ``putamen_<side>``, ``striatum_<side>``, ``striatum``,
    ``putamen``, ``insula``, ``thalamus`` and ``reference`` (brain without striata, thalamus and midbrain: the LRP
    paper's intensity-scaling region, without its ventricles)."""
    return {name: mask.copy() for name, mask in _masks().items()}


def striatal_box() -> tuple[slice, slice, slice]:
    """Voxel slices of the "striatum only" crop."""
    return tuple(
        slice(int(np.ceil((lo - o) / VOXEL_MM)), int(np.floor((hi - o) / VOXEL_MM)) + 1)
        for (lo, hi), o in zip(STRIATAL_BOX_MM, ORIGIN_MM, strict=True)
    )  # type: ignore[return-value]
