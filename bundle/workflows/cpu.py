"""What the CPU offers the bundle's kernels: native bf16, as PyTorch's oneDNN build and OpenVINO use it.

Written here because neither library honours a capped oneDNN ISA in its own check: with ``ONEDNN_MAX_CPU_ISA=AVX2``
(the documented way to test the AVX2 class on a newer CPU) both still report bf16 from the CPU's flags and then run,
or fail to find, kernels the cap removed. A real AVX2 CPU reports no bf16, so the cap is honoured the same way.
"""

from __future__ import annotations

import os

import torch

__all__ = ["cpu_supports_bf16", "bf16_allowed_by_isa_cap"]

_BF16_ISA_MARKS = ("BF16", "AMX", "AVX10", "FP16", "VNNI_2")
"""oneDNN ISA names (``ONEDNN_MAX_CPU_ISA``) from which bf16 kernels exist: avx2_vnni_2, avx512_core_bf16,
avx512_core_fp16 / avx10_1_512, avx512_core_amx and later."""


def bf16_allowed_by_isa_cap() -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below its first ISA with bf16 kernels (e.g. ``AVX2``)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap in ("", "ALL", "DEFAULT") or any(mark in cap for mark in _BF16_ISA_MARKS)


def cpu_supports_bf16() -> bool:
    """Whether bf16 runs natively here: PyTorch's oneDNN says so and no ISA cap removes it."""
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checker()) and bf16_allowed_by_isa_cap() if checker is not None else False
