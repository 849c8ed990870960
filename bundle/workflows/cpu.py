"""What the CPU offers the bundle's kernels: native bf16, as PyTorch's oneDNN build and OpenVINO use it.

Written here because neither library honours a capped oneDNN ISA in its own check: with ``ONEDNN_MAX_CPU_ISA=AVX2``
(the documented way to test the AVX2 class on a newer CPU) both still report bf16 from the CPU's flags and then run,
or fail to find, kernels the cap removed. A real AVX2 CPU reports no bf16, so the cap is honoured the same way.
"""

from __future__ import annotations

import os

import torch

__all__ = ["CPU_CLASSES", "cpu_class", "cpu_supports_bf16", "bf16_allowed_by_isa_cap", "emulated_isa_cache_warning"]

CPU_CLASSES = ("amx", "avx512_bf16", "avx512", "avx2", "other")
"""The CPU classes the README supports, fastest kernels first (``other``: none of them, e.g. ARM)."""

_ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")

_BF16_ISA_MARKS = ("BF16", "AMX", "AVX10", "FP16", "VNNI_2")
"""oneDNN ISA names (``ONEDNN_MAX_CPU_ISA``) from which bf16 kernels exist: avx2_vnni_2, avx512_core_bf16,
avx512_core_fp16 / avx10_1_512, avx512_core_amx and later."""


def _onednn_cap() -> str:
    """``ONEDNN_MAX_CPU_ISA`` upper-cased; ``""`` when no cap applies (unset, ``ALL`` or ``DEFAULT``)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return "" if cap in ("ALL", "DEFAULT") else cap


def bf16_allowed_by_isa_cap() -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below its first ISA with bf16 kernels (e.g. ``AVX2``)."""
    cap = _onednn_cap()
    return not cap or any(mark in cap for mark in _BF16_ISA_MARKS)


def cpu_supports_bf16() -> bool:
    """Whether bf16 runs natively here: PyTorch's oneDNN says so and no ISA cap removes it."""
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(checker()) and bf16_allowed_by_isa_cap() if checker is not None else False


def cpu_class() -> str:
    """This CPU's class (one of :data:`CPU_CLASSES`) as PyTorch's kernels see it: ``ATEN_CPU_CAPABILITY`` and
    ``ONEDNN_MAX_CPU_ISA`` lower it the way they lower the kernels (the documented emulation of another class)."""
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ... (honours ATEN's cap)
    cap = _onednn_cap()
    if capability == "AVX512" and cap.startswith("AVX2"):
        capability = "AVX2"
    if capability == "AVX512":
        if not cpu_supports_bf16():
            return "avx512"
        amx = torch.cpu._is_amx_tile_supported() and (not cap or "AMX" in cap)
        return "amx" if amx else "avx512_bf16"
    return "avx2" if capability == "AVX2" else "other"


def emulated_isa_cache_warning() -> str | None:
    """A warning when a CPU class is emulated (``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` set) while
    ``torch.compile`` uses inductor's default on-disk cache, else None.

    That cache is shared by every process of the user whatever the variables say: measured with PyTorch 2.13, a
    frozen-weight compile cached under one setting and reused under the other gave wrong features or a glibc
    ``malloc assertion`` abort. A real CPU of either class never mixes them; an emulation needs a cache of its own.
    """
    forced = [f"{name}={os.environ[name]}" for name in _ISA_VARIABLES if os.environ.get(name)]
    if not forced or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return None
    return (
        f"compile with {' '.join(forced)} and inductor's shared cache: code compiled under another CPU setting can be "
        "reused and give wrong results; set TORCHINDUCTOR_CACHE_DIR to a folder used only with these variables"
    )
