"""The explanation methods by name, on one patch of the single-side regressor F."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.data import MetaTensor
from torch import nn

from bundle.explain.fullgrad import fullgrad_saliency
from bundle.explain.hirescam import hirescam
from bundle.explain.lrp import lrp

__all__ = ["METHODS", "explain_patches"]

METHODS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "hirescam": hirescam,
    "lrp": lambda network, x: lrp(network, x),
    "fullgrad": fullgrad_saliency,
}
"""Map [B, 1, *patch] of each method for F and patches [B, 1, *patch]: HiResCAM (signed), LRP relevance (signed),
full-gradient saliency (non-negative)."""


def explain_patches(network: nn.Module, patches: torch.Tensor, method: str) -> torch.Tensor:
    """``method``'s maps [B, X, Y, Z] of patches [B, 1, X, Y, Z] (divided by their means) for F, in one pass."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {sorted(METHODS)}")
    plain = patches.as_tensor() if isinstance(patches, MetaTensor) else patches  # the maps carry no metadata
    return METHODS[method](network, plain.float())[:, 0].detach()
