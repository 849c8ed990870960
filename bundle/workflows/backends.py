"""The CPU inference backends and ``inference_backend: auto``: the backend measured fastest on this CPU's class.

``torch`` runs the whole network in PyTorch (bf16 autocast where the CPU has native bf16, else float32;
channels-last); ``openvino`` runs the convolutional features through OpenVINO (:mod:`bundle.workflows.openvino`)
and the dropout head in PyTorch. ``auto`` (the default) picks between them by the table below, from
``scripts/benchmark.py --peers-only`` on each CPU class (docs/performance.md, "Inference backend per CPU class").
"""

from __future__ import annotations

import importlib.util

import torch

from bundle.workflows.cpu import cpu_class

__all__ = ["BACKENDS", "FASTEST_BY_CPU_CLASS", "resolve_backend"]

BACKENDS = ("auto", "torch", "openvino")
FASTEST_BY_CPU_CLASS = {"amx": "openvino", "avx512_bf16": "openvino", "avx512": "openvino", "avx2": "openvino"}
"""The faster of the bundle's two CPU backends per class, measured at Table-1 and demo width (``other``: torch)."""


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``backend`` itself, or for ``auto`` the backend to use on ``device``: ``torch`` on a GPU; on a CPU the one
    measured fastest for its class (:data:`FASTEST_BY_CPU_CLASS`), ``torch`` when OpenVINO is not installed.

    Raises:
        ValueError: an unknown backend (one line).
    """
    if backend not in BACKENDS:
        raise ValueError(f"inference_backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if torch.device(device).type != "cpu":
        return "torch"
    fastest = FASTEST_BY_CPU_CLASS.get(cpu_class(), "torch")
    return fastest if fastest == "torch" or importlib.util.find_spec("openvino") is not None else "torch"
