"""How well a map points at a structure whose position is known (the synthetic cohort's masks).

Written here (a few lines each): the enrichment ratio is the share of the map's positive evidence inside the
structure divided by the structure's share of the patch (1 = no preference, > 1 = the map points at it); the
pointing game (Zhang et al. 2018) asks whether the map's maximum lies inside the structure.
"""

from __future__ import annotations

import numpy as np

__all__ = ["enrichment_ratio", "pointing_hit"]


def enrichment_ratio(saliency: np.ndarray, mask: np.ndarray) -> float:
    """(sum of max(map, 0) inside ``mask`` / sum of max(map, 0)) / (voxels in ``mask`` / voxels); NaN when the map
    has no positive evidence or the mask is empty."""
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0.0, None)
    mask = np.asarray(mask, dtype=bool)
    total, share = positive.sum(), mask.mean()
    if total <= 0 or share == 0:
        return float("nan")
    return float(positive[mask].sum() / total / share)


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's maximum (first one in C order on ties) lies inside ``mask``."""
    return bool(np.asarray(mask, dtype=bool).flat[int(np.argmax(saliency))])
