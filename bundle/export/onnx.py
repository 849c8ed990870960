"""ONNX export of the paired model F_sym (eq. 3) that records the configuration it was exported with.

The network is built as :func:`~bundle.export.torchscript.export_torchscript` builds it (config files merged, overrides
applied, the arguments the checkpoint records), loaded strictly from the one read of the checkpoint
(:class:`~bundle.workflows.checkpoints.TrainedModel`), wrapped in :class:`~bundle.method.networks.SymmetricRegressor`
and exported in eval mode and float32 with PyTorch's TorchScript-based exporter: input ``image``
``[batch, 2, *patch_size]`` (mirrored right patch, left patch), output ``pred`` ``[batch, 2]`` (right, left;
normalised SBR), the batch axis dynamic. The model's ``metadata_props`` hold the merged config with the network
arguments and ``sbr_max`` by value (``inference.json``), ``metadata.json``, the network arguments and the bundle
version, so the file says what the weights are.

Monte-Carlo dropout is not exported (:data:`MC_REFUSAL`): onnxruntime's graph optimiser deletes ONNX ``Dropout``
nodes whatever their ``training_mode``, and with optimisation off its CPU kernel re-seeds a linear congruential
engine with consecutive seeds on every call, so the first mask element is the same in every sample. Intervals need
PyTorch or TorchScript (``mc_forward``). ``onnx`` and ``onnxruntime`` are optional (the ``onnx`` extra).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from monai.bundle import ConfigParser

import bundle
from bundle.export.torchscript import export_config
from bundle.io import atomic_open
from bundle.method.networks import SymmetricRegressor
from bundle.workflows.checkpoints import read_checkpoint

__all__ = ["OPSET", "MC_REFUSAL", "paired_network", "export_onnx", "max_abs_difference"]

OPSET = 17
"""ONNX opset of the export (3D Conv, MaxPool and Gemm only; widely supported, tested with onnxruntime 1.32)."""
MC_REFUSAL = (
    "MC dropout is not exported to ONNX (onnxruntime removes or mis-seeds dropout); prediction intervals need "
    "PyTorch or TorchScript: use model.pt or model.ts (export_torchscript.py) with mc_forward"
)
"""The one-line refusal of ``mc=True`` (docs/integrations/onnx.md)."""
_EXPORTER_NOTICES = (
    ".*legacy TorchScript-based ONNX export.*",
    ".*feature will be removed.*",
    ".*Converting a tensor to a Python boolean.*",  # the pair's shape check, constant for a fixed patch size
)


def _optional(name: str) -> ModuleType:
    """The optional package ``name``; ``ImportError`` with the install command when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"the ONNX export needs {name}: python -m pip install -e '.[onnx]'") from err


def paired_network(
    ckpt_file: str | os.PathLike,
    config_files: str | Sequence[str] = "configs/inference.json",
    overrides: Mapping[str, Any] | None = None,
) -> tuple[SymmetricRegressor, dict[str, Any]]:
    """The paired model (float32, CPU, eval mode) with the weights of ``ckpt_file``, and the merged raw config with
    ``overrides`` applied and the network's arguments written out by value (as ``export_torchscript`` stores it).
    A TorchScript ``ckpt_file`` is refused (``ValueError``): the export traces the bundle's own modules."""
    if Path(ckpt_file).suffix == ".ts":
        raise ValueError(f"checkpoint {ckpt_file}: the ONNX export needs the weights (model.pt), not TorchScript")
    trained = read_checkpoint(ckpt_file)
    config, network = export_config(ckpt_file, config_files, overrides, trained)
    network = trained.load_into(network, "cpu").float()
    return SymmetricRegressor(network).eval(), config


def _metadata(model: SymmetricRegressor, config: Mapping[str, Any], meta_file: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of the exported model: what the weights are and how to feed and read them."""
    regressor = model.regressor
    arguments = regressor.config() if hasattr(regressor, "config") else {"class": type(regressor).__name__}
    patch = ", ".join(str(s) for s in config["patch_size"])
    sbr_max = ConfigParser(dict(config)).get_parsed_content("sbr_max")
    return {
        "bundle_version": bundle.__version__,
        "network": json.dumps(arguments),
        "inference.json": json.dumps(config),
        "metadata.json": json.dumps(json.loads(Path(meta_file).read_text())),
        "input": f"image: float32 [batch, 2, {patch}] = (mirrored right patch, left patch), "
        "each divided by its mean (the preprocessing of inference.json)",
        "output": f"pred: float32 [batch, 2] = (right, left) normalised SBR; times sbr_max ({sbr_max}) for SBR units",
        "sbr_max": str(sbr_max),
        "mc_dropout": MC_REFUSAL,
        "research_use_only": "true",
    }


def export_onnx(
    filepath: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    config_files: str | Sequence[str] = "configs/inference.json",
    overrides: Mapping[str, Any] | None = None,
    mc: bool = False,
    *,
    meta_file: str | os.PathLike = "configs/metadata.json",
    opset: int = OPSET,
) -> Path:
    """Export the paired model with the weights of ``ckpt_file`` to ONNX at ``filepath`` (written atomically).

    ``mc=True`` raises ``ValueError(MC_REFUSAL)`` before any work: MC dropout does not survive in onnxruntime.
    """
    if mc:
        raise ValueError(MC_REFUSAL)
    onnx = _optional("onnx")
    model, config = paired_network(ckpt_file, config_files, overrides)
    example = torch.zeros(3, 2, *config["patch_size"])  # neither 1 nor 2: no size is specialised by the trace
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        for message in _EXPORTER_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        torch.onnx.export(
            model, (example,), buffer, input_names=["image"], output_names=["pred"], opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = "Symmetric 3D VGG regressor: nigral SMWI patch pair -> striatal SBR. Research use only."
    onnx.helper.set_model_props(proto, _metadata(model, config, meta_file))
    onnx.checker.check_model(proto)
    with atomic_open(filepath, "wb") as handle:
        handle.write(proto.SerializeToString())
    return Path(filepath)


def max_abs_difference(filepath: str | os.PathLike, model: torch.nn.Module, pairs: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime (CPU) on the ONNX file and ``model`` (put in eval mode) on
    the pairs ``[B, 2, *patch_size]``, in normalised SBR."""
    session = _optional("onnxruntime").InferenceSession(str(filepath), providers=["CPUExecutionProvider"])
    pairs = pairs.detach().float().cpu()
    (exported,) = session.run(["pred"], {"image": pairs.numpy()})
    with torch.no_grad():
        reference = model.eval()(pairs).float()
    return float((torch.from_numpy(exported) - reference).abs().max())
