"""The network as the explainers see it: a copy in eval mode without in-place operations, and its layers in order."""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["explainable_copy", "conv_layers", "sequential_layers"]


def explainable_copy(network: nn.Module) -> nn.Module:
    """A float32 copy of ``network`` in eval mode (dropout off) whose ReLUs do not work in place (gradient hooks
    need the layer inputs intact)."""
    network = copy.deepcopy(network).float().eval()
    for module in network.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return network


def conv_layers(network: nn.Module) -> list[nn.Conv3d]:
    """The network's 3D convolutions in definition (= forward) order."""
    return [module for module in network.modules() if isinstance(module, nn.Conv3d)]


def sequential_layers(network: nn.Module) -> list[nn.Module]:
    """The layers of a plain feed-forward regressor in forward order: the modules of ``network.blocks`` (or of an
    ``nn.Sequential``), a flatten, then ``network.fc``. Dropout is left out (explanations are of the eval model)."""
    if isinstance(network, nn.Sequential):
        return [m for m in network if not isinstance(m, (nn.Dropout, nn.Dropout3d))]
    blocks = getattr(network, "blocks", None)
    if blocks is None or not hasattr(network, "fc") or getattr(network, "block_dropout", 0.0):
        raise TypeError(f"{type(network).__name__}: no plain layer sequence (blocks + fc, no block dropout) to explain")
    layers = [m for block in blocks for m in block]
    return [*layers, nn.Flatten(), network.fc]
