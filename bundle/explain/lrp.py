"""Layer-wise relevance propagation with the rule layout of the DaT-SPECT LRP paper (Nazari et al. 2021, Methods).

The paper: the epsilon rule (eps = 1e-4) at the fully connected layers, the alpha-beta rule with alpha = 2 (beta = 1)
at the upper convolutional layers (its 4th and 3rd) and the flat rule at the first two. Here the convolutions of the
first block get the flat rule, every later convolution alpha-beta, the linear head epsilon; max-pooling passes
relevance to the maximal input (winner takes all), ReLU and flatten pass it unchanged.

Written here, not taken from a library: zennit implements these rules for Conv3d but imports torchvision when it is
imported, and no CPU build of torchvision exists on the package index (the CUDA build does not load against the CPU
PyTorch); Captum's LRP has neither alpha-beta with alpha = 2 nor the flat rule. Each rule below is the standard
"gradient trick" (Montavon et al. 2019): R_in = a * grad_a(z(a) . stop_grad(R_out / z(a))).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bundle.explain.layers import explainable_copy, sequential_layers

__all__ = ["Epsilon", "AlphaBeta", "Flat", "paper_layout", "lrp"]

Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _stabilise(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    return z + epsilon * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def _redistribute(forward: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, relevance: torch.Tensor,
                  epsilon: float) -> torch.Tensor:  # fmt: skip
    """a * grad_a(z . R / z) for z = forward(a)."""
    a = a.detach().requires_grad_(True)
    z = forward(a)
    (gradient,) = torch.autograd.grad(z, a, (relevance / _stabilise(z, epsilon)).detach())
    return a.detach() * gradient


def _with_weight(layer: nn.Module, weight: torch.Tensor, bias: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The layer's operation with another weight (and its bias, or none)."""
    b = layer.bias if bias else None
    if isinstance(layer, nn.Conv3d):
        return lambda a: nn.functional.conv3d(a, weight, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    return lambda a: nn.functional.linear(a, weight, b)


@dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon (the paper's eq. 2 with its eps = 1e-4): z_ij = a_i w_ij, bias absorbs relevance."""

    epsilon: float = 1e-4

    def __call__(self, layer: nn.Module, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        return _redistribute(layer, a, relevance, self.epsilon)


@dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta (alpha - beta = 1): alpha times the relevance through the positive contributions
    (a+ w+ and a- w-) minus beta times that through the negative ones (a+ w- and a- w+); no bias."""

    alpha: float = 2.0
    beta: float = 1.0
    epsilon: float = 1e-9

    def __call__(self, layer: nn.Module, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        w_pos, w_neg = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
        a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
        pos_p, pos_n = _with_weight(layer, w_pos, False), _with_weight(layer, w_neg, False)

        def through(f_pos: Callable, f_neg: Callable) -> torch.Tensor:
            x_pos, x_neg = a_pos.detach().requires_grad_(True), a_neg.detach().requires_grad_(True)
            z = f_pos(x_pos) + f_neg(x_neg)
            g_pos, g_neg = torch.autograd.grad(z, (x_pos, x_neg), (relevance / _stabilise(z, self.epsilon)).detach())
            return x_pos.detach() * g_pos + x_neg.detach() * g_neg

        return self.alpha * through(pos_p, pos_n) - self.beta * through(pos_n, pos_p)


@dataclass(frozen=True)
class Flat:
    """LRP-flat: relevance spread evenly over each output's receptive field (weights and inputs taken as 1)."""

    def __call__(self, layer: nn.Module, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        ones = _with_weight(layer, torch.ones_like(layer.weight), False)
        return _redistribute(ones, torch.ones_like(a), relevance, 1e-9)


def paper_layout(layers: Sequence[nn.Module], flat_convs: int | None = None) -> list[Rule | None]:
    """The DaT-SPECT LRP paper's rules for ``layers``: flat for the first ``flat_convs`` convolutions (the paper's
    network: 2; ``None``: those before the first max-pool, the regressor's first block), alpha-beta (2, 1) for every
    later convolution, epsilon (1e-4) for linear layers; None (pass-through) for the rest."""
    rules: list[Rule | None] = []
    pooled, convs = False, 0
    for layer in layers:
        if isinstance(layer, nn.Conv3d):
            flat = not pooled if flat_convs is None else convs < flat_convs
            rules.append(Flat() if flat else AlphaBeta())
            convs += 1
        elif isinstance(layer, nn.Linear):
            rules.append(Epsilon())
        else:
            pooled = pooled or isinstance(layer, nn.MaxPool3d)
            rules.append(None)
    return rules


def _pass(layer: nn.Module, a: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """ReLU and flatten: unchanged (reshaped); max-pool: to the maximal input through the gradient."""
    if isinstance(layer, nn.MaxPool3d):
        return _redistribute(layer, a, relevance, 1e-9)
    return relevance.reshape(a.shape)


def lrp(
    network: nn.Module,
    x: torch.Tensor,
    layout: Callable[[Sequence[nn.Module]], list[Rule | None]] = paper_layout,
    return_layers: bool = False,
    target: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Relevance [B, C, *spatial] of ``x`` for the network's output: the relevance put in at the top is the output
    itself (a regressor) or, with ``target`` [B] (class indices), the target class's logit alone (a classifier).
    With ``return_layers`` also the relevance entering each layer, bottom to top (to check conservation)."""
    model = explainable_copy(network)
    layers = sequential_layers(model)
    rules = layout(layers)
    activations = [x.detach().float()]
    with torch.no_grad():
        for layer in layers:
            activations.append(layer(activations[-1]))
    relevance = activations[-1]
    if target is not None:
        relevance = relevance * nn.functional.one_hot(target.long(), relevance.shape[1]).to(relevance.dtype)
    relevances = [relevance]
    for layer, rule, a in zip(reversed(layers), reversed(rules), reversed(activations[:-1]), strict=True):
        relevance = (rule or _pass)(layer, a, relevance)
        relevances.append(relevance)
    relevances.reverse()
    return (relevance, relevances) if return_layers else relevance
