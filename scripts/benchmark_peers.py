"""The CPU runtimes a user could pick, on the Table-1 network and one batch of patches, for ``benchmark.py --peers``.

Every peer runs the same architecture with the same input shape; its weights are the same random ones where the
runtime can load them from PyTorch (ONNX Runtime, OpenVINO) and its own random ones for TF/Keras (speed does not
depend on the values). A peer whose package is missing is reported as skipped with the install hint. The CPU's
matrix-multiply peaks give every figure a fraction of the machine's limit.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from bundle.method.networks import VGGRegressor3D

__all__ = ["conv_gflop_per_patch", "matmul_gflops", "peer_forwards"]

PATCH = (50, 50, 20)


def conv_gflop_per_patch(network: VGGRegressor3D) -> float:
    """Forward GFLOP of one patch (2 x multiply-adds of every convolution and the linear head)."""
    flops = 0.0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv3d):
            kernel = module.in_channels * int(np.prod(module.kernel_size)) // module.groups
            flops += 2.0 * kernel * output.numel()
        elif isinstance(module, nn.Linear):
            flops += 2.0 * module.in_features * output.numel()

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(1, 1, *PATCH))
    finally:
        for hook in hooks:
            hook.remove()
    return flops / 1e9


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a square matrix multiply in ``dtype`` on this CPU (PyTorch / oneDNN)."""
    a, b = torch.rand(size, size).to(dtype), torch.rand(size, size).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def _keras_model(channels: tuple[int, ...]):
    """The Table-1 architecture in TF/Keras (the authors' stack): two 3x3x3 'same' convolutions with ReLU and a 2x2x2
    max-pool per block, flatten, dense(1); channels-last input."""
    import keras

    layers = [keras.Input((*PATCH, 1))]
    for width in channels:
        layers += [keras.layers.Conv3D(width, 3, padding="same", activation="relu") for _ in range(2)]
        layers.append(keras.layers.MaxPooling3D(2))
    layers += [keras.layers.Flatten(), keras.layers.Dense(1)]
    return keras.Sequential(layers)


def peer_forwards(network: VGGRegressor3D, patches: torch.Tensor) -> tuple[dict[str, Callable[[], None]], list[str]]:
    """One forward of ``patches`` [N, 1, *PATCH] per peer runtime, and notes on the peers that were skipped."""
    network = network.float().eval()
    x = patches.float().contiguous()
    x_np = x.numpy()
    forwards: dict[str, Callable[[], None]] = {}
    notes: list[str] = []

    def torch_fp32() -> None:
        with torch.no_grad():
            network(x)

    forwards["peer_torch_fp32"] = torch_fp32
    try:
        import onnxruntime as ort

        buffer = io.BytesIO()
        torch.onnx.export(network, (x[:1],), buffer, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False)  # fmt: skip
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        forwards["peer_onnxruntime_fp32"] = lambda: session.run(None, {"x": x_np})
    except ImportError:
        notes.append('onnxruntime skipped: pip install -e ".[onnx]"')
    try:
        import openvino as ov

        with torch.no_grad():
            model = ov.convert_model(network, example_input=x[:1], input=[ov.PartialShape([-1, 1, *PATCH])])
        from bundle.workflows.openvino import openvino_precision

        core = ov.Core()
        hints = ("f32", "bf16") if openvino_precision() == "bf16" else ("f32",)
        if len(hints) == 1:
            notes.append("OpenVINO bf16 skipped: no native bf16 on this CPU (class)")
        for hint in hints:
            compiled = core.compile_model(
                model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
            )
            forwards[f"peer_openvino_{hint}"] = lambda c=compiled: c(x_np)
    except ImportError:
        notes.append('OpenVINO skipped: pip install -e ".[openvino]"')
    try:
        keras_model = _keras_model(tuple(network.channels))
        x_tf = np.ascontiguousarray(x_np.transpose(0, 2, 3, 4, 1))
        forwards["peer_tf_keras_fp32"] = lambda: keras_model.predict_on_batch(x_tf)  # a compiled tf.function
    except ImportError:
        notes.append('TF/Keras skipped: pip install -e ".[bench]" (tensorflow-cpu, after torch==2.13.0)')
    return forwards, notes
