"""A CPU inference backend: the regressor's convolutional features run by OpenVINO (bf16 where the CPU supports it),
its dropout head stays in PyTorch, so the symmetric MC path (features once, head resampled) and the intervals are
those of the PyTorch path. The model is converted in memory from the loaded checkpoint: nothing is downloaded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bundle.method.networks import VGGRegressor3D
from bundle.workflows.cpu import bf16_allowed_by_isa_cap

__all__ = ["openvino_precision", "openvino_features", "openvino_supports"]

logger = logging.getLogger(__name__)


class _Features(nn.Module):
    """``network.features`` as a module, for conversion."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.network.features(x)


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as error:
        raise RuntimeError('inference_backend "openvino" needs OpenVINO: pip install -e ".[openvino]"') from error
    return openvino


def openvino_precision(requested: str = "auto") -> str:
    """The inference precision hint: ``bf16`` where the CPU reports BF16 (AVX-512-BF16 or AMX) and no oneDNN ISA cap
    removes it (:func:`~bundle.workflows.cpu.bf16_allowed_by_isa_cap`), else ``f32``."""
    if requested != "auto":
        return requested
    capabilities = _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities and bf16_allowed_by_isa_cap() else "f32"


def openvino_supports(network: nn.Module) -> bool:
    """Whether ``network`` can run its features through OpenVINO: the eager regressor of Table 1 with head-only
    dropout (the network the backend was built and measured for; not a baseline preset, whose conversion fails, a
    TorchScript file or block dropout)."""
    return isinstance(network, VGGRegressor3D) and not network.block_dropout


def openvino_features(network: nn.Module, patch_size: Sequence[int], precision: str = "auto") -> nn.Module:
    """``network`` (eval mode, CPU) with its ``features`` replaced by an OpenVINO compiled model of them (dynamic
    batch). Block dropout would need the features resampled in PyTorch, so it is refused."""
    ov = _openvino()
    if not openvino_supports(network):
        raise ValueError('inference_backend "openvino": only the VGG regressor with head-only dropout')
    network = network.float().eval()
    shape = (1, int(getattr(network, "in_channels", 1)), *map(int, patch_size))
    with torch.no_grad():
        model = ov.convert_model(_Features(network), example_input=torch.zeros(shape),
                                 input=[ov.PartialShape([-1, *shape[1:]])])  # fmt: skip
    hint = openvino_precision(precision)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
    logger.info("convolutional features through OpenVINO %s (%s)", ov.__version__, hint)

    def features(x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        if sample:
            raise RuntimeError("OpenVINO features are deterministic; block-dropout sampling needs the torch backend")
        out = compiled(x.detach().float().contiguous().cpu().numpy())[0]
        return torch.from_numpy(out).to(x.device)

    network.features = features
    return network
