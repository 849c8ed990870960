"""Model weights and checkpoints: self-describing ``model.pt``, atomic checkpoint saving, safe weight loading.

- :class:`ModelRecord` makes ``model.pt`` a plain state dict that also records the bundle version and the network
  configuration (in the state dict's ``_metadata``, which ``torch.load(weights_only=True)`` keeps).
- :class:`CheckpointSaver` saves through Ignite's ``Checkpoint`` with an atomic ``DiskSaver`` (temporary file, then
  rename): every epoch / iteration interval, or on a better key metric under a fixed file name.
- :func:`recorded_network` reads that record back, so that the inference-side configs build the network the weights
  were trained as; :func:`load_network` loads ``model.pt`` (``weights_only``) or a TorchScript ``model.ts`` and refuses
  a ``network_def`` that contradicts the record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

import bundle

__all__ = [
    "ModelRecord",
    "read_model_info",
    "recorded_network",
    "require_checkpoint",
    "CheckpointSaver",
    "load_network",
]

INFO_KEY = "bundle"


class ModelRecord:
    """``state_dict``/``load_state_dict`` of ``network`` whose state dict also records the bundle version and the
    network configuration (``network.config()`` if it has one), so a checkpoint tells what it was trained as."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def info(self) -> dict[str, Any]:
        module = getattr(self.network, "module", self.network)
        config = module.config() if hasattr(module, "config") else {"class": type(module).__name__}
        return {"bundle_version": bundle.__version__, "network": config}

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self.network.state_dict()
        metadata = getattr(state, "_metadata", None)
        if metadata is not None:
            metadata.setdefault("", {})[INFO_KEY] = self.info()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state)


def read_model_info(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record written by :class:`ModelRecord` from a loaded state dict, or None for a plain one."""
    metadata = getattr(state, "_metadata", None) or {}
    return metadata.get("", {}).get(INFO_KEY)


def recorded_network(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """The network configuration that ``model.pt`` at ``ckpt_path`` records (its constructor arguments, e.g.
    ``{"channels": [16, 32, 64, 128], "dropout": 0.2, ...}``), or ``{}`` when there is none to read: no file yet, a
    TorchScript file, a plain state dict, or a file that does not load as weights (:func:`load_network` reports
    those). The inference-side configs take every ``network_def`` argument from here unless it is overridden."""
    path = Path(ckpt_path)
    if not path.is_file() or path.suffix == ".ts":
        return {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - reported with its reason by load_network
        return {}
    weights = state["model"] if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping) else state
    info = read_model_info(weights) if isinstance(weights, Mapping) else None
    return dict(info["network"]) if info and isinstance(info.get("network"), Mapping) else {}


def require_checkpoint(ckpt_path: str | os.PathLike) -> Path:
    """``ckpt_path`` as a path; ``FileNotFoundError`` (one line) when there is no such file, so that a workflow stops
    before it reads any data."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train first, or set --ckpt_path)")
    return path


def _conflicts(network: nn.Module, recorded: Mapping[str, Any]) -> list[str]:
    """``name: network_def value vs recorded value`` for each constructor argument where they differ."""
    module = getattr(network, "module", network)
    own = module.config() if hasattr(module, "config") else {}
    return [
        f"{key} {own[key]} (checkpoint: {value})" for key, value in recorded.items() if key in own and own[key] != value
    ]


class _AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` in atomic mode, optionally under one fixed file name that is replaced, never removed
    first (so a crash between two saves never leaves the folder without the file)."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)


class CheckpointSaver:
    """Save ``save_dict`` with Ignite's ``Checkpoint`` and an atomic disk saver (MONAI's ``CheckpointSaver`` writes
    in place: a crash during a save would leave a truncated file).

    Two modes: with ``key_metric`` the engine's metric decides (the best ``n_saved`` are kept; with ``filename``
    under that fixed name, e.g. ``model.pt``); otherwise every ``save_interval`` epochs (``epoch_level``) or
    iterations, keeping the last ``n_saved``. :meth:`state_dict` / :meth:`load_state_dict` carry the record of saved
    files across a resume (Ignite's public ``Checkpoint`` state).

    Args:
        save_dir: folder of the files.
        save_dict: objects to save (one object: its state dict is the file, as ``model.pt``).
        filename: fixed file name (key-metric mode with ``n_saved=1`` only).
        key_metric: name of the engine metric to rank by; ``None`` for interval saving.
        key_metric_negative_sign: rank by minus the metric (lower is better, e.g. a validation MAE).
        epoch_level: interval counted in epochs (else iterations).
        save_interval: interval of the interval mode.
        n_saved: how many files to keep.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str | None = None,
        key_metric: str | None = None,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 1,
        n_saved: int = 1,
    ) -> None:
        if filename is not None and (key_metric is None or n_saved != 1):
            raise ValueError("a fixed filename needs key_metric and n_saved=1")
        if key_metric is None and int(save_interval) < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}")
        self.save_dir = Path(save_dir)
        self.key_metric = key_metric
        self.sign = -1.0 if key_metric_negative_sign else 1.0
        self.epoch_level = epoch_level
        self.save_interval = int(save_interval)
        if key_metric is not None:
            score_function, score_name = self._score, "key_metric"
        else:
            score_function, score_name = self._step, "epoch" if epoch_level else "iteration"
        self.checkpoint = Checkpoint(
            to_save=dict(save_dict),
            save_handler=_AtomicDiskSaver(save_dir, filename),
            score_function=score_function,
            score_name=score_name,
            n_saved=n_saved,
        )

    def _score(self, engine: Engine) -> float:
        return self.sign * float(engine.state.metrics[self.key_metric])

    def _step(self, engine: Engine) -> int:
        return engine.state.epoch if self.epoch_level else engine.state.iteration

    def attach(self, engine: Engine) -> None:
        if self.key_metric is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.checkpoint)
        elif self.epoch_level:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.checkpoint)
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self.checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.checkpoint.state_dict())

    def adopt_existing(self) -> list[Path]:
        """Take over the files that an earlier run of this interval saver left in ``save_dir`` (before a resume):
        the newest ``n_saved`` enter its record, so that the next saves replace them by the usual policy, and the
        older ones are deleted. Returns the deleted files. A key-metric saver's record comes from the training
        state instead (:class:`~bundle.workflows.resume.TrainingState`)."""
        if self.key_metric is not None:
            return []
        pattern = re.compile(rf"^(?:.*_)?{self.checkpoint.score_name}=(\d+)\.pt$")
        found = sorted(
            (int(match.group(1)), path)
            for path in self.save_dir.glob("*.pt")
            if (match := pattern.match(path.name)) is not None
        )
        n_saved = self.checkpoint.n_saved or len(found)
        stale = [path for _, path in found[:-n_saved]] if len(found) > n_saved else []
        for path in stale:
            path.unlink()
        self.checkpoint.load_state_dict({"_saved": [(score, path.name) for score, path in found[-n_saved:]]})
        return stale

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.checkpoint.load_state_dict(state)


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


def load_network(network: nn.Module, ckpt_path: str | os.PathLike, device: torch.device | str) -> nn.Module:
    """The weights of ``ckpt_path`` on ``device``, in eval mode.

    ``*.ts`` (TorchScript from ``ckpt_export``) is loaded with ``torch.jit.load`` and replaces ``network``; anything
    else is loaded with ``torch.load(weights_only=True)`` (a ``model.pt`` state dict, or a full-state training
    checkpoint's ``model``) into ``network`` by Ignite's ``Checkpoint.load_objects`` (strict). A mismatch is a
    one-line error naming the offending keys and, when ``model.pt`` records it, the network it was trained as; so is a
    ``network_def`` whose arguments contradict that record (e.g. an explicit ``--network_def#channels`` override, or a
    different dropout rate that the calibration was not made for).
    """
    path = require_checkpoint(ckpt_path)
    if path.suffix == ".ts":
        return torch.jit.load(str(path), map_location=device).eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusal, corrupt file
        raise ValueError(f"checkpoint {path}: cannot be loaded safely as weights ({type(err).__name__})") from None
    weights = state["model"] if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping) else state
    info = read_model_info(weights)
    if info and (conflicts := _conflicts(network, info.get("network", {}))):
        raise ValueError(
            f"checkpoint {path} was trained with another network than network_def sets: {'; '.join(conflicts)}; "
            "drop the network_def override (the checkpoint's own record is used by default)"
        )
    try:
        Checkpoint.load_objects(to_load={"model": network}, checkpoint={"model": weights})
    except (RuntimeError, KeyError, TypeError):
        hint = f"it was trained as {info['network']}" if info else "use the network_def of its training run"
        problem = _mismatch(network, weights)
        raise ValueError(f"checkpoint {path} does not fit network_def ({problem}); {hint}") from None
    return network.to(device).eval()
