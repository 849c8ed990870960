"""Full-gradient saliency (Srinivas & Fleuret, NeurIPS 2019), as the DAT-Net paper uses it.

For a network of ReLU, max-pool and affine layers, the output decomposes exactly into the input-gradient term and
one bias-gradient term per biased layer (completeness):

    f(x) = sum(grad_x f * x) + sum_l sum(grad_{b_l} f * b_l),

where grad_{b_l} f at every position is the gradient at the layer's output (the bias is added at every position).
The saliency map is psi(grad_x f * x) + sum_l psi(upsampled grad_{b_l} f * b_l) with psi = absolute value,
normalised to [0, 1] per map. Written here: no maintained library implements full-gradient for 3D networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bundle.explain.layers import explainable_copy

__all__ = ["FullGradients", "full_gradients", "fullgrad_saliency"]


@dataclass
class FullGradients:
    """The decomposition of one output: ``output`` [B], ``input_term`` (grad_x f * x, shaped like the input) and
    ``bias_terms`` (grad_b f * b per biased layer, shaped like that layer's output)."""

    output: torch.Tensor
    input_term: torch.Tensor
    bias_terms: list[torch.Tensor]

    def completeness_gap(self) -> torch.Tensor:
        """|f(x) - (sum of the input term + sum of every bias term)| per sample: zero for a piecewise-linear net."""
        total = self.input_term.flatten(1).sum(1) + sum(term.flatten(1).sum(1) for term in self.bias_terms)
        return (self.output - total).abs()


def full_gradients(network: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> FullGradients:
    """Input- and bias-gradient terms of the scalar output of ``network`` ([B, C, ...] -> [B, 1] or [B]) at ``x``;
    for a classifier ([B, classes] logits) that of the ``target`` [B] class's logit."""
    model = explainable_copy(network)
    biased = [m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Linear)) and m.bias is not None]
    calls: list[tuple[nn.Module, torch.Tensor]] = []  # in call order (a module may run more than once)
    hooks = [m.register_forward_hook(lambda m, _i, out: calls.append((m, out))) for m in biased]
    try:
        x = x.detach().float().requires_grad_(True)
        output = model(x)
        if target is not None:
            output = output.gather(1, target.long().reshape(-1, 1).to(output.device))
        output = output.reshape(x.shape[0])
        gradients = torch.autograd.grad(output.sum(), [x, *(out for _, out in calls)])
    finally:
        for hook in hooks:
            hook.remove()
    bias_terms = []
    for (module, _), gradient in zip(calls, gradients[1:], strict=True):
        if isinstance(module, nn.Linear):  # the bias is on the last axis ([B, features] or [B, tokens, features])
            bias_terms.append((gradient * module.bias).detach())
        else:  # a convolution: one bias per channel
            bias_terms.append((gradient * module.bias.reshape((1, -1) + (1,) * (gradient.dim() - 2))).detach())
    return FullGradients(output.detach(), (gradients[0] * x).detach(), bias_terms)


def _normalised(term: torch.Tensor) -> torch.Tensor:
    flat = term.abs().flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(1e-12)
    return ((flat - low[:, None]) / scale[:, None]).reshape(term.shape)


def fullgrad_saliency(network: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """The full-gradient saliency map [B, 1, *spatial] of ``x`` [B, C, *spatial]: the normalised absolute input
    term plus, for every biased convolution, its normalised absolute bias term summed over channels and
    trilinearly upsampled (linear layers have no spatial map). ``target``: as in :func:`full_gradients`."""
    parts = full_gradients(network, x, target)
    saliency = _normalised(parts.input_term).sum(1, keepdim=True)
    for term in parts.bias_terms:
        if term.dim() == x.dim():
            upsampled = F.interpolate(term, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
            saliency = saliency + _normalised(upsampled).sum(1, keepdim=True)
    return saliency
