"""``inference_backend: auto`` and the CPU class it is chosen by (bundle.workflows.backends, bundle.workflows.cpu)."""

import importlib.util

import pytest
import torch

from bundle.workflows import backends
from bundle.workflows.backends import FASTEST_BY_CPU_CLASS, resolve_backend
from bundle.workflows.cpu import CPU_CLASSES, cpu_class


@pytest.mark.parametrize("klass", CPU_CLASSES)
def test_auto_is_the_backend_measured_fastest_on_each_cpu_class(monkeypatch, klass):
    monkeypatch.setattr(backends, "cpu_class", lambda: klass)
    assert resolve_backend("auto", "cpu") == FASTEST_BY_CPU_CLASS.get(klass, "torch")
    assert resolve_backend("auto", "cpu", torch.nn.Linear(1, 1)) == "torch"  # a network OpenVINO cannot take
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "openvino" else real_find_spec(name))
    assert resolve_backend("auto", "cpu") == "torch"  # without OpenVINO installed, whatever the class


def test_auto_is_torch_on_a_gpu_and_an_explicit_backend_is_kept():
    assert resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    assert resolve_backend("openvino", "cpu") == "openvino" and resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="^inference_backend must be one of auto, torch, openvino, got 'onnx'$"):
        resolve_backend("onnx", "cpu")


def test_a_oneDNN_cap_at_avx2_makes_any_x86_cpu_the_avx2_class(monkeypatch):
    """The documented emulation of the AVX2 class (ONEDNN_MAX_CPU_ISA=AVX2) is honoured by the class too."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.fail(f"this suite runs on x86-64 CPUs with AVX2 or newer, not {torch.backends.cpu.get_cpu_capability()}")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_class() == "avx2"
