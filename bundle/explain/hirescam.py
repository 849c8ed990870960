"""HiResCAM for regression as the symmetric-regressor paper defines it (§5.3) through Captum.

HiResCAM (Draelos & Carin 2020) is the element-wise product of a class score's gradient and the activations of the
last convolutional layer, summed over channels, upsampled to the input (sign kept). Captum's
``LayerGradientXActivation`` computes that product; the regression needs a class score, which §5.3 defines.
"""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradientXActivation
from torch import nn

from bundle.explain.layers import conv_layers, explainable_copy

__all__ = ["regression_class_score", "hirescam"]


def regression_class_score(normalised_sbr: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """§5.3: the high-SBR class score F~(x) = F(x)/SBR_max where F~(x) >= ``threshold``, else the low-SBR score
    F~'(x) = 1 - F~(x). The network already predicts F(x)/SBR_max (the normalised SBR)."""
    return torch.where(normalised_sbr >= threshold, normalised_sbr, 1.0 - normalised_sbr)


class _ScoreModel(nn.Module):
    """The regressor followed by :func:`regression_class_score`: [B, C, *patch] -> [B] class scores."""

    def __init__(self, network: nn.Module, threshold: float) -> None:
        super().__init__()
        self.network, self.threshold = network, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return regression_class_score(self.network(x).reshape(x.shape[0]), self.threshold)


def hirescam(
    network: nn.Module, patch: torch.Tensor, layer: nn.Module | None = None, threshold: float = 0.5
) -> torch.Tensor:
    """HiResCAM map [B, 1, *patch] of ``network`` (one patch -> normalised SBR) for ``patch`` [B, C, *patch]: the
    class score's gradient times the activations of ``layer`` (default: the last 3D convolution's output), summed
    over channels, trilinearly upsampled to the patch; positive where the evidence raises the chosen score."""
    model = explainable_copy(network)
    if layer is None:
        layer = conv_layers(model)[-1]
    else:  # the same layer in the copy
        layer = dict(model.named_modules())[next(n for n, m in network.named_modules() if m is layer)]
    product = LayerGradientXActivation(_ScoreModel(model, threshold), layer).attribute(patch.float())
    cam = product.sum(dim=1, keepdim=True)
    return LayerAttribution.interpolate(cam, tuple(patch.shape[2:]), interpolate_mode="trilinear").detach()
