"""Drive the bundle's own workflows (``python -m bundle run ...``) for multi-run experiments (ablation, sweep).

Each step runs in a subprocess with its log in the step's folder and is skipped when its output marker exists, so
an interrupted experiment resumes where it stopped. A step's marker is written only after the step succeeded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bundle.constants import MC_SAMPLES
from bundle.io import write_json

__all__ = [
    "WORKFLOW_CONFIGS",
    "BundleRunner",
    "cli_value",
    "add_common_arguments",
    "common_settings",
    "datalist_path",
    "hardware",
    "thread_env",
]

logger = logging.getLogger(__name__)

WORKFLOW_CONFIGS: dict[str, tuple[str, ...]] = {
    "training": ("configs/train.json",),
    "calibrate": ("configs/inference.json", "configs/calibrate.json"),
    "inference": ("configs/inference.json",),
    "evaluating": ("configs/inference.json", "configs/evaluate.json"),
    "explain": ("configs/inference.json", "configs/explain.json"),
}
"""The config files of each workflow, base first (README "Commands"): the inference-side ones overlay inference.json."""


def cli_value(value: Any) -> str:
    """A config override as ``monai.bundle`` (python-fire) parses it back: strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value)


@dataclass(frozen=True)
class BundleRunner:
    """Runs bundle workflows from ``bundle_root`` with the shared overrides (data, device, network width).

    Args:
        bundle_root: repository root (holds ``configs/``).
        extra_configs: config files layered on every workflow's main config (e.g. ``configs/demo.json``).
        common: overrides passed to every workflow (``dataset_dir``, ``datalist``, ``network_def#channels``, ...).
        env: extra environment variables for the subprocesses.
    """

    bundle_root: Path
    extra_configs: Sequence[str] = ()
    common: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, workflow: str, configs: Sequence[str], overrides: Mapping[str, Any]) -> list[str]:
        """The workflow's own configs (:data:`WORKFLOW_CONFIGS`), then ``extra_configs``, then ``configs``."""
        configs = [*WORKFLOW_CONFIGS[workflow], *self.extra_configs, *configs]
        config_arg = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
        cmd = [sys.executable, "-m", "bundle", "run", workflow, "--config_file", config_arg,
               "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]  # fmt: skip
        for key, value in {"bundle_root": str(self.bundle_root), **self.common, **overrides}.items():
            cmd += [f"--{key}", cli_value(value)]
        return cmd

    def run(
        self, workflow: str, configs: Sequence[str], overrides: Mapping[str, Any], marker: Path, log: Path | None = None
    ) -> float:
        """Run one workflow (with ``configs`` layered last, see :meth:`command`) unless ``marker`` exists; returns its
        wall time in seconds (0 when skipped).

        Raises ``RuntimeError`` with the end of the log when the workflow fails.
        """
        if marker.exists():
            logger.info("skip %s: %s exists", workflow, marker)
            return 0.0
        log = log or marker.parent / f"{workflow}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(workflow, configs, overrides)
        env = dict(os.environ, **self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(self.bundle_root), env.get("PYTHONPATH", "")])
        logger.info("%s -> %s", workflow, log)
        start = time.perf_counter()
        with open(log, "a") as handle:  # appended: an interrupted and resumed step keeps its whole history
            handle.write(" ".join(cmd) + "\n")
            handle.flush()
            result = subprocess.run(cmd, cwd=self.bundle_root, env=env, stdout=handle, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{workflow} failed (exit {result.returncode}); log {log}:\n{tail}")
        if not marker.exists():
            write_json(marker, {"workflow": workflow, "configs": list(configs), "wall_s": round(wall, 1),
                                "command": cmd[1:]})  # fmt: skip
        return wall


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options shared by the experiment scripts (data, width, epochs, device)."""
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny network, few epochs (CPU minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-dir", default=None, help="dataset_dir (default: the demo cohort)")
    parser.add_argument("--configs", nargs="*", default=["configs/demo.json"],
                        help="config files layered on every workflow (default configs/demo.json; none: Table 1 "
                             "width and train.json's epochs)")  # fmt: skip
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="network_def#channels")
    parser.add_argument("--epochs", type=int, default=None, help="num_epochs (default: from the configs)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--mc-samples", type=int, default=None, help="MC-dropout samples (default 100)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--amp", choices=["true", "false"], default=None, help="mixed precision (default: on)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per workflow (OMP_NUM_THREADS); 1 is kinder on a shared machine")  # fmt: skip


def thread_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment of the workflow subprocesses for ``--threads``."""
    return {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} if args.threads else {}


def common_settings(args: argparse.Namespace, quick: Mapping[str, Any]) -> tuple[dict, dict, int]:
    """(overrides for every workflow, training-only overrides, MC samples) from :func:`add_common_arguments`;
    ``quick`` supplies ``channels``, ``epochs`` and ``mc_samples`` defaults under ``--quick``."""
    channels = args.channels or (quick["channels"] if args.quick else None)
    epochs = args.epochs or (quick["epochs"] if args.quick else None)
    mc_samples = args.mc_samples if args.mc_samples is not None else (quick["mc_samples"] if args.quick else MC_SAMPLES)
    common: dict[str, Any] = {}
    if channels:
        common["network_def#channels"] = list(channels)
    if args.dataset_dir:
        common["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    if args.device:
        common["device"] = f"$torch.device('{args.device}')"
    if args.amp:
        common["amp"] = args.amp == "true"
    train = {k: v for k, v in {"num_epochs": epochs, "learning_rate": args.learning_rate}.items() if v is not None}
    return common, train, int(mc_samples)


def datalist_path(bundle_root: Path, common: Mapping[str, Any], datalist: str | None = None) -> Path:
    """The datalist the workflows use: ``datalist``, else ``{dataset_dir}/datalist.json`` (the demo cohort's)."""
    if datalist:
        return Path(datalist)
    return Path(common.get("dataset_dir") or bundle_root / "data" / "demo") / "datalist.json"


def hardware() -> str:
    """One line: machine, CPU cores, GPU."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPU cores, {gpu}".replace(" ,", ",")
