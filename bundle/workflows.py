"""Small helpers the bundle configs call: device/precision setup, data loader sizing, a reference baseline."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["autocast_dtype", "cuda_amp_dtype", "prepare_network", "loader_workers", "mean_baseline_mae"]

logger = logging.getLogger(__name__)


def _cpu_supports_bf16() -> bool:
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checker()) if checker is not None else False


def autocast_dtype(amp: bool, device: torch.device | str) -> torch.dtype | None:
    """dtype for :class:`~bundle.networks.SymmetricRegressor`'s own autocast: bf16 on a CPU that supports it.

    CUDA mixed precision is left to MONAI's engines (``amp=True``), so this returns ``None`` there.
    """
    if not amp or torch.device(device).type != "cpu":
        return None
    if not _cpu_supports_bf16():
        logger.warning("amp requested but this CPU has no bf16 support: running in float32")
        return None
    return torch.bfloat16


def cuda_amp_dtype() -> torch.dtype:
    """bf16 where the GPU supports it, else fp16 (MONAI's engines add a GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def prepare_network(network: nn.Module, device: torch.device | str, amp: bool = False) -> nn.Module:
    """Move ``network`` to ``device``; with ``amp`` also to channels_last_3d memory format (fast bf16 3D convs)."""
    network = network.to(device)
    return network.to(memory_format=torch.channels_last_3d) if amp else network


def loader_workers(device: torch.device | str) -> int:
    """DataLoader workers: none on CPU (augmentation of cached patches is cheap, cores are better spent on
    convolutions), up to 4 when a GPU does the maths."""
    if torch.device(device).type == "cpu":
        return 0
    return min(4, os.cpu_count() or 1)


def mean_baseline_mae(train_cases: Sequence[dict[str, Any]], val_cases: Sequence[dict[str, Any]]) -> float:
    """Validation MAE (SBR units, averaged over sides) of predicting the training mean SBR of each side.

    Logged at the start of training as the reference a useful model must beat.
    """
    maes = []
    for key in ("sbr_right", "sbr_left"):
        mean = float(np.mean([c[key] for c in train_cases]))
        maes.append(float(np.mean([abs(c[key] - mean) for c in val_cases])))
    value = float(np.mean(maes))
    logger.info("reference: predicting the training mean gives validation MAE %.4f (SBR units)", value)
    return value
