"""Conventions every sub-package shares: side order, the patch grid, the SBR scale and the abnormality thresholds.

The only literal of the SBR scale in the package is :data:`DEFAULT_SBR_MAX`; the configs' ``sbr_max`` id is what the
workflows use.
"""

from __future__ import annotations

__all__ = ["SIDES", "PATCH_SIZE", "TARGET_SPACING", "DEFAULT_SBR_MAX", "MC_SAMPLES", "ABNORMAL_SBR", "side_index"]

SIDES: tuple[str, str] = ("right", "left")
"""Order of the two sides everywhere: channels of a patch pair, columns of predictions and targets."""

PATCH_SIZE: tuple[int, int, int] = (50, 50, 20)
"""Nigral patch size in voxels (RAS axes), the network's input size (configs: ``patch_size``)."""

TARGET_SPACING: tuple[float, float, float] = (0.5, 0.5, 1.0)
"""Voxel size (mm, RAS axes) of the network's input patches: the clinical SMWI protocol."""

DEFAULT_SBR_MAX: float = 6.84
"""SBR normalisation of the paper (the cohort's maximum SBR): the network and the loss see SBR / sbr_max.

Also the divisor with which the original public release stores ``true_sbr`` in its ``.mat`` pairs. Configs set it
as ``sbr_max``; everything that leaves inference is in SBR units."""

MC_SAMPLES: int = 100
"""Stochastic passes of symmetric MC dropout (Algorithm 1's n): every Python default; ``configs/inference.json``'s
``mc_samples`` holds the same number (a test keeps the two equal)."""

ABNORMAL_SBR: dict[str, float] = {"right": 3.401, "left": 3.345}
"""SBR below which a side is abnormal (positive) in the binary agreement of Table 4."""


def side_index(side: int | str) -> int:
    """0 for ``"right"`` / 0, 1 for ``"left"`` / 1 (the column of that side)."""
    index = {"right": 0, "left": 1}.get(side, side) if isinstance(side, str) else int(side)
    if index not in (0, 1):
        raise ValueError(f"side must be 'right', 'left', 0 or 1, got {side!r}")
    return int(index)
