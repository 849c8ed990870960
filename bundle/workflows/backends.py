"""The CPU inference backends and ``inference_backend: auto``: the backend measured fastest on this CPU's class.

``torch`` runs the whole network in PyTorch (bf16 autocast where the CPU has native bf16, else float32;
channels-last); ``openvino`` runs the convolutional features through OpenVINO (:mod:`bundle.workflows.openvino`)
and the dropout head in PyTorch. ``auto`` (the default) picks between them by the table below, from
``scripts/benchmark.py --peers-only`` on each CPU class (docs/performance.md, "Inference backend per CPU class").
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from torch import nn

from bundle.workflows.cpu import cpu_class
from bundle.workflows.openvino import openvino_supports

__all__ = ["BACKENDS", "FASTEST_BY_CPU_CLASS", "resolve_backend"]

BACKENDS = ("auto", "torch", "openvino")
FASTEST_BY_CPU_CLASS = {"amx": "openvino", "avx512_bf16": "openvino", "avx512": "openvino", "avx2": "openvino"}
"""The faster of the bundle's two CPU backends per class, measured at Table-1 and demo width (``other``: torch)."""
logger = logging.getLogger(__name__)


def resolve_backend(backend: str, device: torch.device | str, network: nn.Module | None = None) -> str:
    """``backend`` itself, or for ``auto`` the backend to use for ``network`` on ``device``: ``torch`` on a GPU; on a
    CPU the one measured fastest for its class (:data:`FASTEST_BY_CPU_CLASS`), ``torch`` when OpenVINO is not
    installed or cannot run ``network`` (the measured choice needs the regressor's own structure).

    Raises:
        ValueError: an unknown backend (one line).
    """
    if backend not in BACKENDS:
        raise ValueError(f"inference_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if torch.device(device).type != "cpu":
        return "torch"
    klass = cpu_class()
    chosen = FASTEST_BY_CPU_CLASS.get(klass, "torch")
    if chosen == "openvino" and (
        importlib.util.find_spec("openvino") is None or (network is not None and not openvino_supports(network))
    ):
        chosen = "torch"
    logger.info("inference backend auto: %s (CPU class %s)", chosen, klass)
    return chosen
