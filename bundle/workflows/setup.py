"""Helpers the configs call: device and precision setup, loader sizing, distributed start, a reference baseline."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ignite.distributed as idist
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bundle.workflows.backends import resolve_backend
from bundle.workflows.cpu import cpu_supports_bf16, emulated_isa_cache_warning
from bundle.workflows.openvino import openvino_features

__all__ = [
    "BOOLEAN_WORDS",
    "flag",
    "on_terminal",
    "autocast_dtype",
    "cuda_amp_dtype",
    "prepare_network",
    "CPUAutocast",
    "compile_features",
    "loader_workers",
    "cache_workers",
    "mean_baseline_mae",
    "init_distributed",
    "distributed_device",
    "rank_zero_first",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)


def on_terminal() -> bool:
    """Whether stderr is a terminal: progress bars are drawn only then, so a log file holds whole lines."""
    return sys.stderr.isatty()


BOOLEAN_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
"""Command-line words read as booleans (lower case)."""


def flag(value: bool | str | int) -> bool:
    """A boolean config value, also when given on the command line as ``true``/``false``/``yes``/``no``/``1``/``0``."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in BOOLEAN_WORDS:
            raise ValueError(f"expected a boolean, got {value!r}")
        return BOOLEAN_WORDS[lowered]
    return bool(value)


def autocast_dtype(amp: bool, device: torch.device | str) -> torch.dtype | None:
    """dtype for :class:`~bundle.method.networks.SymmetricRegressor`'s own autocast: bf16 on a CPU that supports it.

    CUDA mixed precision is left to MONAI's engines (``amp=True``), so this returns ``None`` there.
    """
    if not amp or torch.device(device).type != "cpu":
        return None
    if not cpu_supports_bf16():
        logger.warning("amp requested but this CPU has no bf16 support: running in float32")
        return None
    return torch.bfloat16


def cuda_amp_dtype() -> torch.dtype:
    """bf16 where the GPU supports it, else fp16 (MONAI's engines add a GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def prepare_network(
    network: nn.Module,
    device: torch.device | str,
    amp: bool = False,
    inference: bool = False,
    compile: bool = False,
    backend: str = "auto",
    patch_size: Sequence[int] | None = None,
) -> nn.Module:
    """Move ``network`` to ``device``, in channels_last_3d memory format with ``amp`` (fast bf16 3D convs) and on a
    CPU in float32 too (oneDNN's faster layout there as well: a demo-width training step 1.28× faster with AVX2
    kernels, 1.15× with AVX-512, docs/performance.md); a TorchScript module is left in its format.

    With ``inference`` and bf16 autocast on this CPU, the convolutions' weights are stored in bf16 too, which
    spares autocast re-casting 14 M weights at every forward (≈ 35 % faster inference); the linear head stays
    float32. Training keeps float32 master weights.

    With ``inference`` and ``compile``, the convolutional feature extractor (``network.features``, which the
    deterministic and the fast MC paths share) is compiled by ``torch.compile`` with inductor's weight freezing
    (weights folded in as constants, conv + ReLU fused): faster per batch, at a one-off compile cost per batch
    shape (see docs/performance.md). Training compiles through the trainer's own ``compile`` option instead.

    With ``inference`` and ``backend="openvino"`` (CPU only), the features run through OpenVINO instead
    (:mod:`bundle.workflows.openvino`, bf16 where the CPU supports it; ``patch_size`` gives the input shape);
    ``amp`` and ``compile`` then do not apply to them. ``"auto"`` is the backend measured fastest on this CPU's
    class (:func:`bundle.workflows.backends.resolve_backend`).
    """
    if inference and resolve_backend(backend, device, network) == "openvino":
        if torch.device(device).type != "cpu":
            raise ValueError("inference_backend 'openvino' runs on the CPU; use 'torch' on a GPU")
        return openvino_features(network.to("cpu"), patch_size or network.patch_size, "auto" if amp else "f32")
    network = network.to(device)
    eager_on_cpu = torch.device(device).type == "cpu" and not isinstance(network, torch.jit.ScriptModule)
    if amp or eager_on_cpu:
        network = network.to(memory_format=torch.channels_last_3d)
        if inference and autocast_dtype(amp, device) == torch.bfloat16:
            for module in network.modules():
                if isinstance(module, nn.Conv3d):
                    module.to(torch.bfloat16)
    if compile and inference:
        network = compile_features(network)
    return network


class CPUAutocast(nn.Module):
    """Run ``module`` under CPU autocast in ``dtype`` (``None``: as it is) and return float32: bf16 training and
    inference on a CPU with MONAI's engines, whose own ``amp`` is CUDA only. ``module`` is what checkpoints save."""

    def __init__(self, module: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.dtype is None:
            return self.module(x)
        with torch.autocast("cpu", dtype=self.dtype):
            return self.module(x).float()


def compile_features(network: nn.Module) -> nn.Module:
    """``network`` (eval mode) with its ``features`` method replaced by a frozen-weight ``torch.compile`` of it.

    The weights are baked into the compiled code, so the returned network is for inference only: it must not be
    trained or have its weights changed afterwards. A network without a ``features`` method is compiled whole.
    """
    if isinstance(network, torch.jit.ScriptModule):
        logger.warning("compile ignored: a TorchScript model is already compiled")
        return network
    network.eval()
    if warning := emulated_isa_cache_warning():
        logger.warning(warning)
    options = {"freezing": True}
    if not hasattr(network, "features"):
        return torch.compile(network, dynamic=False, options=options)
    network.features = torch.compile(network.features, dynamic=False, options=options)
    return network


def loader_workers(device: torch.device | str, cache_device: torch.device | str = "cpu") -> int:
    """DataLoader workers: none on CPU (augmentation of cached patches is cheap, cores are better spent on
    convolutions) or when the cache lives on the GPU (``cache_on_device``), up to 4 when a GPU does the maths."""
    if torch.device(device).type == "cpu" or torch.device(cache_device).type == "cuda":
        return 0
    return cache_workers()


def cache_workers() -> int:
    """Worker threads that fill a ``CacheDataset`` (up to 4)."""
    return min(4, os.cpu_count() or 1)


def mean_baseline_mae(train_cases: Sequence[dict[str, Any]], val_cases: Sequence[dict[str, Any]]) -> float:
    """Validation MAE (SBR units, averaged over sides) of predicting the training mean SBR of each side.

    Logged at the start of training as the reference a useful model must beat.
    """
    maes = []
    for key in ("sbr_right", "sbr_left"):
        train = [c[key] for c in train_cases if isinstance(c.get(key), (int, float))]
        val = [c[key] for c in val_cases if isinstance(c.get(key), (int, float))]
        if not train or not val:
            logger.info("reference baseline skipped: SBR values are not in the datalist (e.g. only in .mat files)")
            return float("nan")
        mean = float(np.mean(train))
        maes.append(float(np.mean([abs(v - mean) for v in val])))
    value = float(np.mean(maes))
    logger.info("reference: predicting the training mean gives validation MAE %.4f (SBR units)", value)
    return value


def init_distributed(device: torch.device | str) -> None:
    """Join the torchrun process group: NCCL for a CUDA ``device`` (made the current device first), else gloo.

    Also syncs ignite's distributed context on every rank: ignite creates process sub-groups (a collective) on
    its first ``idist`` call, and if that call happens on rank 0 only (e.g. in ``CheckpointSaver``, a rank-0
    handler) training deadlocks. No-op for a process group that already exists.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    idist.sync()


def distributed_device() -> torch.device:
    """This torchrun process's device, ``cuda:LOCAL_RANK`` (else the CPU), once it has joined the process group
    (:func:`init_distributed`); ``multi_gpu_train.json``'s ``device``, so the group exists before anything else."""
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    init_distributed(device)
    return device


def rank_zero_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run on rank 0 first while the other ranks wait (``ignite.distributed.one_rank_first``),
    then on the other ranks.

    For one-off side effects such as generating the demo cohort on first use (``bundle.data.resolve_datalist``):
    rank 0 writes the files, the others then find them in place instead of racing it. An error on rank 0 is raised
    on every rank (the others get a ``RuntimeError`` naming it) rather than leaving them at the barrier. Outside
    torch.distributed it is a plain call.
    """
    if idist.get_world_size() == 1:
        return fn(*args, **kwargs)
    status, result, error = ["ok"], None, None
    with idist.one_rank_first(rank=0):
        if idist.get_rank() == 0:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # shared with the other ranks below, then raised
                error, status = err, [f"{type(err).__name__}: {err}"]
        else:  # rank 0 has finished: learn whether it failed before doing the same work
            dist.broadcast_object_list(status, src=0)
            if status[0] == "ok":
                result = fn(*args, **kwargs)
    if idist.get_rank() == 0:
        dist.broadcast_object_list(status, src=0)
        if error is not None:
            raise error
    elif status[0] != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed on rank 0: {status[0]}")
    return result  # type: ignore[return-value]
