"""CPU memory reuse: keep the memory of freed tensors in the process heap instead of handing it back to the kernel."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch

__all__ = ["reuse_heap_memory"]

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap top


def reuse_heap_memory(device: torch.device | str) -> bool:
    """On a CPU device under Linux/glibc, let freed tensor memory be reused instead of page-faulted in afresh.

    A 3D VGG training step allocates and frees hundreds of MB of activations and gradients. By default glibc's
    malloc serves large blocks with fresh ``mmap`` pages and unmaps them on free, and trims the heap top beyond
    128 kB, so every step page-faults and zero-fills the same memory again: about 60 000 minor faults per step at
    the demo width and 330 000 at the Table-1 width (16 patches), 20-40 % of the step on a 2-core AMD EPYC Zen 4
    (docs/performance.md). This turns ``mmap`` allocation off (``M_MMAP_MAX = 0``) and keeps up to 2 GiB of free
    heap (``M_TRIM_THRESHOLD``), so the pages stay mapped and are reused. The cost: the resident memory stays at its
    peak between steps instead of shrinking.

    Written by hand: PyTorch has no CPU caching allocator outside its mobile builds, and jemalloc or tcmalloc do
    the same only through ``LD_PRELOAD``, which a config cannot set. CUDA devices are left alone (tensors live on
    the GPU, whose caching allocator already reuses memory).

    Returns:
        whether the setting was applied (a CPU device on Linux with glibc).
    """
    if torch.device(device).type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt is a no-op)
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
    if applied:
        logger.debug("glibc malloc: mmap off, trim threshold 2 GiB (freed tensor memory is reused)")
    return applied
