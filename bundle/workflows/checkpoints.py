"""Trained model files: the self-describing ``model.pt`` and :class:`TrainedModel`, a checkpoint read once.

- :class:`ModelRecord` makes ``model.pt`` a plain state dict that also records the bundle version, the network
  configuration and ``sbr_max`` (in the state dict's ``_metadata``, which ``torch.load(weights_only=True)`` keeps).
- :func:`read_checkpoint` reads ``model.pt``, a full-state training checkpoint or a TorchScript ``model.ts`` once:
  its weights, record and SHA-256. The :class:`TrainedModel` gives the network's arguments, loads the weights
  strictly, refusing a ``network_def`` that contradicts the record, and refuses an ``sbr_max`` the weights were not
  trained with.

Saving checkpoints: :mod:`bundle.workflows.savers`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import Checkpoint
from torch import nn

import bundle
from bundle.constants import DEFAULT_SBR_MAX

__all__ = ["ModelRecord", "TrainedModel", "read_checkpoint", "require_checkpoint"]

INFO_KEY = "bundle"
"""Key of the record in the state dict's ``_metadata[""]``."""
EXPORT_FILES = ("inference.json", "metadata.json")
"""Extra files of a TorchScript export (``scripts/export_torchscript.py``) that hold its record."""

logger = logging.getLogger(__name__)


class ModelRecord:
    """``state_dict``/``load_state_dict`` of ``network`` whose state dict also records the bundle version, the network
    configuration (``network.config()`` if it has one) and, when given, ``sbr_max`` (the normalisation of the
    targets), so a checkpoint tells what it was trained as. The weight keys are those of ``network``."""

    def __init__(self, network: nn.Module, sbr_max: float | None = None) -> None:
        self.network = network
        self.sbr_max = None if sbr_max is None else float(sbr_max)

    def info(self) -> dict[str, Any]:
        module = getattr(self.network, "module", self.network)
        config = module.config() if hasattr(module, "config") else {"class": type(module).__name__}
        info: dict[str, Any] = {"bundle_version": bundle.__version__, "network": config}
        if self.sbr_max is not None:
            info["sbr_max"] = self.sbr_max
        return info

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self.network.state_dict()
        metadata = getattr(state, "_metadata", None)
        if metadata is not None:
            metadata.setdefault("", {})[INFO_KEY] = self.info()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state)


def require_checkpoint(ckpt_path: str | os.PathLike) -> Path:
    """``ckpt_path`` as a path; ``FileNotFoundError`` (one line) when there is no such file, so that a workflow stops
    before it reads any data."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (give --ckpt_path: a training run writes runs/train/model.pt; "
            "a checkout ships models/model.pt)"
        )
    return path


def _conflicts(network: nn.Module, recorded: Mapping[str, Any]) -> list[str]:
    """``name: network_def value vs recorded value`` for each constructor argument where they differ."""
    module = getattr(network, "module", network)
    own = module.config() if hasattr(module, "config") else {}
    return [
        f"{key} {own[key]} (checkpoint: {value})" for key, value in recorded.items() if key in own and own[key] != value
    ]


def _mismatch(network: nn.Module, state: Mapping[str, Any]) -> str:
    """Which keys of ``state`` do not fit ``network``: missing, unexpected, shape mismatch (first four of each)."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return "; ".join(
        f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    )


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A checkpoint file as :func:`read_checkpoint` read it.

    Attributes:
        path: the file.
        sha256: hex digest of its bytes (as recorded in ``run.json``); None when there is no file yet.
        weights: its state dict (a full-state checkpoint's ``model``); None for TorchScript.
        scripted: the TorchScript module (on the CPU) of a ``*.ts`` file; None otherwise.
        network: the network's recorded constructor arguments; ``{}`` when there is no record.
        sbr_max: the recorded ``sbr_max``, else :data:`~bundle.constants.DEFAULT_SBR_MAX`.
        sbr_max_recorded: whether the file records ``sbr_max`` (bundle 0.9 and plain state dicts do not).
        bundle_version: the bundle version that saved or exported it, when recorded.
    """

    path: Path
    sha256: str | None
    weights: Mapping[str, torch.Tensor] | None = None
    scripted: torch.jit.ScriptModule | None = None
    network: dict[str, Any] = field(default_factory=dict)
    sbr_max: float = DEFAULT_SBR_MAX
    sbr_max_recorded: bool = False
    bundle_version: str | None = None

    def network_args(self, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The constructor arguments the weights were trained with, over ``defaults``."""
        return {**dict(defaults or {}), **self.network}

    def load_into(self, network: nn.Module, device: torch.device | str) -> nn.Module:
        """``network`` with these weights on ``device``, in eval mode; for TorchScript the scripted module instead.

        Loaded strictly by Ignite's ``Checkpoint.load_objects``. A mismatch is a one-line ``ValueError`` naming the
        offending keys and, when recorded, the network the weights were trained as; so is a ``network_def`` whose
        arguments contradict the record (e.g. an explicit ``--network_def#channels`` override, or a different dropout
        rate that the calibration was not made for).
        """
        if self.scripted is not None:
            return self.scripted.to(device).eval()
        if self.weights is None:  # a record made without a file
            require_checkpoint(self.path)
            raise ValueError(f"checkpoint {self.path}: no weights were read")
        if conflicts := _conflicts(network, self.network):
            raise ValueError(
                f"checkpoint {self.path} was trained with another network than network_def sets: "
                f"{'; '.join(conflicts)}; drop the network_def override (the checkpoint's own record is used by "
                "default)"
            )
        try:
            Checkpoint.load_objects(to_load={"model": network}, checkpoint={"model": self.weights})
        except (RuntimeError, KeyError, TypeError):
            hint = f"it was trained as {self.network}" if self.network else "use the network_def of its training run"
            problem = _mismatch(network, self.weights or {})
            raise ValueError(f"checkpoint {self.path} does not fit network_def ({problem}); {hint}") from None
        return network.to(device).eval()

    def check_sbr_max(self, sbr_max: float | None = None) -> float:
        """The ``sbr_max`` to use with these weights: the recorded one, which a given ``sbr_max`` must equal
        (``ValueError`` otherwise); without a record, ``sbr_max`` or the default, said in one log line."""
        if sbr_max is not None and (isinstance(sbr_max, bool) or not isinstance(sbr_max, (int, float)) or sbr_max <= 0):
            raise ValueError(f"sbr_max must be a positive number, got {sbr_max!r}")
        if self.sbr_max_recorded:
            if sbr_max is not None and not math.isclose(float(sbr_max), self.sbr_max, rel_tol=1e-9):
                raise ValueError(
                    f"checkpoint {self.path} was trained with sbr_max {self.sbr_max}; --sbr_max {sbr_max} contradicts "
                    "it (drop the override: inference takes it from the checkpoint)"
                )
            return self.sbr_max
        value = DEFAULT_SBR_MAX if sbr_max is None else float(sbr_max)
        origin = f"saved by bundle {self.bundle_version}" if self.bundle_version else "no bundle record"
        using = "the default" if value == DEFAULT_SBR_MAX else "sbr_max"
        logger.info("checkpoint %s records no sbr_max (%s): using %s %s", self.path, origin, using, value)
        return value


def _model_info(state: Mapping[str, Any]) -> dict[str, Any]:
    """The record written by :class:`ModelRecord` in a loaded state dict; ``{}`` for a plain one."""
    metadata = getattr(state, "_metadata", None) or {}
    info = metadata.get("", {}).get(INFO_KEY)
    return dict(info) if isinstance(info, Mapping) else {}


def _sbr_max(value: Any) -> dict[str, Any]:
    """The ``sbr_max`` fields of :class:`TrainedModel` for a recorded value (None, or not a positive number: none)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return {}
    return {"sbr_max": float(value), "sbr_max_recorded": True}


def _json_object(data: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(data or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _read_scripted(path: Path, data: bytes, digest: str) -> TrainedModel:
    """A TorchScript file; its record is the config stored by the export (network arguments and ``sbr_max`` by
    value) and the bundle's ``metadata.json``."""
    extra: dict[str, Any] = dict.fromkeys(EXPORT_FILES, "")
    try:
        scripted = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except Exception as err:  # not TorchScript, corrupt file
        raise ValueError(f"checkpoint {path}: cannot be loaded as TorchScript ({type(err).__name__})") from None
    config, meta = (_json_object(extra[name]) for name in EXPORT_FILES)
    network_def = config.get("network_def") if isinstance(config.get("network_def"), dict) else {}
    network = {
        key: value
        for key, value in network_def.items()
        if not key.startswith("_") and not (isinstance(value, str) and value.startswith(("$", "@", "%")))
    }
    version = meta.get("version")
    return TrainedModel(path, digest, scripted=scripted, network=network, **_sbr_max(config.get("sbr_max")),
                        bundle_version=str(version) if version else None)  # fmt: skip


def read_checkpoint(ckpt_path: str | os.PathLike) -> TrainedModel:
    """Read the checkpoint at ``ckpt_path`` once: ``*.ts`` with ``torch.jit.load`` (on the CPU), anything else with
    ``torch.load(weights_only=True)`` (a ``model.pt`` state dict, or a full-state training checkpoint's ``model``).

    Raises:
        FileNotFoundError: no such file (one line, :func:`require_checkpoint`).
        ValueError: a file that does not load safely as weights (e.g. pickled code) or as TorchScript (one line).
    """
    path = require_checkpoint(ckpt_path)
    data = path.read_bytes()  # one read: the hash and the weights come from the same bytes
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix == ".ts":
        return _read_scripted(path, data, digest)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusal, corrupt file
        raise ValueError(f"checkpoint {path}: cannot be loaded safely as weights ({type(err).__name__})") from None
    weights = state["model"] if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping) else state
    if not isinstance(weights, Mapping):
        raise ValueError(f"checkpoint {path}: holds no state dict but a {type(weights).__name__}")
    info = _model_info(weights)
    network = info.get("network")
    version = info.get("bundle_version")
    return TrainedModel(path, digest, weights=weights, network=dict(network) if isinstance(network, Mapping) else {},
                        **_sbr_max(info.get("sbr_max")), bundle_version=str(version) if version else None)  # fmt: skip
