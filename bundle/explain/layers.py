"""The network as the explainers see it: a copy in eval mode without in-place operations, and its layers in order."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["explainable_copy", "fuse_batch_norms", "conv_layers", "sequential_layers"]


def fuse_batch_norms(network: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm3d`` registered right after a ``Conv3d`` of the same parent (MONAI's
    ``ResNetBlock``: conv1, bn1, ..., conv2, bn2; a downsample ``Sequential``: conv, norm) into that convolution's
    weight and bias, the norm becoming an identity: the network is then convolutions, ReLU, pooling and sums only,
    which full-gradient completeness and LRP need. In place; returns ``network``."""
    for parent in network.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = parent._modules[first], parent._modules[second]
            if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d) and norm.track_running_stats:
                parent._modules[first] = fuse_conv_bn_eval(conv.eval(), norm.eval())
                parent._modules[second] = nn.Identity()
    return network


def explainable_copy(network: nn.Module) -> nn.Module:
    """A float32 copy of ``network`` in eval mode (dropout off) whose ReLUs do not work in place (gradient hooks
    need the layer inputs intact) and whose batch norms are folded into their convolutions."""
    network = copy.deepcopy(network).float().eval()
    for module in network.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return fuse_batch_norms(network)


def conv_layers(network: nn.Module) -> list[nn.Conv3d]:
    """The network's 3D convolutions in definition (= forward) order."""
    return [module for module in network.modules() if isinstance(module, nn.Conv3d)]


def sequential_layers(network: nn.Module) -> list[nn.Module]:
    """The layers of a plain feed-forward regressor in forward order: the modules of ``network.blocks`` (or of an
    ``nn.Sequential``), a flatten, then ``network.fc``, after the input standardisation if the network has one (its
    relevance passes through unchanged: maps are of the standardised patch, on the same voxels). Dropout is left
    out (explanations are of the eval model)."""
    if isinstance(network, nn.Sequential):
        return [m for m in network if not isinstance(m, (nn.Dropout, nn.Dropout3d))]
    blocks = getattr(network, "blocks", None)
    if blocks is None or not hasattr(network, "fc") or getattr(network, "block_dropout", 0.0):
        raise TypeError(f"{type(network).__name__}: no plain layer sequence (blocks + fc, no block dropout) to explain")
    layers = [m for block in blocks for m in block]
    first = [network.input_norm] if getattr(network, "standardise_input", False) else []
    return [*first, *layers, nn.Flatten(), network.fc]
