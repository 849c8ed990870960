"""The explanation methods by name, on one patch of the single-side regressor F."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.data import MetaTensor
from torch import nn

from bundle.explain.fullgrad import fullgrad_saliency
from bundle.explain.hirescam import hirescam
from bundle.explain.lrp import lrp

__all__ = ["METHODS", "explain_patch"]

METHODS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "hirescam": hirescam,
    "lrp": lambda network, x: lrp(network, x),
    "fullgrad": fullgrad_saliency,
}
"""Map [B, 1, *patch] of each method for F and patches [B, 1, *patch]: HiResCAM (signed), LRP relevance (signed),
full-gradient saliency (non-negative)."""


def explain_patch(network: nn.Module, patch: torch.Tensor, method: str) -> torch.Tensor:
    """``method``'s map [X, Y, Z] of one patch [1, X, Y, Z] (channel-first, divided by its mean) for F."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {sorted(METHODS)}")
    plain = patch.as_tensor() if isinstance(patch, MetaTensor) else patch  # the maps carry no metadata
    return METHODS[method](network, plain.float().unsqueeze(0))[0, 0].detach()
