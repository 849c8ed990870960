"""TorchScript export that records the configuration it was exported with.

MONAI's ``ckpt_export`` stores each config *file* in the TorchScript archive (``extra/inference.json``), so command
line overrides are lost there, and ``network_def`` and ``sbr_max`` hold expressions that read the checkpoint's record.
Here the config files are merged, the overrides applied and the network arguments and ``sbr_max`` written out by value
(as built for ``ckpt_file``); that one config is what is exported and stored (with ``metadata.json``), so the archive
says what the weights are (:func:`~bundle.workflows.checkpoints.read_checkpoint` reads it back from a ``*.ts``).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ckpt_export

from bundle.workflows.checkpoints import TrainedModel, read_checkpoint

__all__ = ["TRAINED_MODEL_ID", "merged_config", "export_config", "export_torchscript"]

TRAINED_MODEL_ID = "checkpoint"
"""Config id of the checkpoint as the inference configs read it (a :class:`~bundle.workflows.checkpoints.TrainedModel`;
``export_config`` puts its own read there)."""


def merged_config(config_files: str | Sequence[str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The raw (unparsed) config of ``config_files`` layered in order, with ``overrides`` (``a#b`` ids) applied."""
    parser = ConfigParser()
    parser.read_config(f=config_files)
    parser.update(dict(overrides or {}))
    return parser.get()


def export_config(
    ckpt_file: str | os.PathLike,
    config_files: str | Sequence[str] = "configs/inference.json",
    overrides: Mapping[str, Any] | None = None,
    trained: TrainedModel | None = None,
) -> tuple[dict[str, Any], Any]:
    """The merged raw config for ``ckpt_file`` with ``overrides`` applied and the network's arguments and ``sbr_max``
    (by default those ``ckpt_file`` records) written out by value, and the (untrained) ``network_def`` it builds.
    ``trained`` is ``ckpt_file`` as already read (else it is read here, once); an ``sbr_max`` override that
    contradicts its record is a ``ValueError``."""
    trained = trained or read_checkpoint(ckpt_file)
    config = merged_config(config_files, {"ckpt_path": str(ckpt_file), **(overrides or {})})
    parser = ConfigParser(copy.deepcopy(config))
    if TRAINED_MODEL_ID in parser:
        parser[TRAINED_MODEL_ID] = trained  # the configs' read of the checkpoint: this one
    network = parser.get_parsed_content("network_def")
    if hasattr(network, "config"):
        arguments = network.config()
        config["network_def"].update({k: v for k, v in arguments.items() if k in config["network_def"]})
        config["patch_size"] = arguments["patch_size"]
    if "sbr_max" in config:
        config["sbr_max"] = trained.check_sbr_max(parser.get_parsed_content("sbr_max"))
    return config, network


def export_torchscript(
    filepath: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    config_files: str | Sequence[str] = "configs/inference.json",
    meta_file: str | os.PathLike = "configs/metadata.json",
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``network_def`` with the weights of ``ckpt_file`` to TorchScript at ``filepath`` (via MONAI's
    ``ckpt_export``); ``extra/inference.json`` inside holds the merged config with ``overrides`` applied and the
    network's arguments (by default those ``ckpt_file`` records) by value."""
    config, _ = export_config(ckpt_file, config_files, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "inference.json"
        merged.write_text(json.dumps(config, indent=4))
        ckpt_export(
            net_id="network_def", filepath=str(filepath), ckpt_file=str(ckpt_file), meta_file=str(meta_file),
            config_file=str(merged),
        )  # fmt: skip
    return Path(filepath)
