"""Checks that run before any engine starts, and the way a workflow stops on bad input: one line, exit code 2.

Each workflow's ``initialize`` runs one preflight component (:class:`TrainingPreflight`, :class:`InferencePreflight`):
boolean settings, training settings, the output folders and their free disk, CPU heap reuse and the random seed, in
that order. A problem ends the run with ``error: <one line>`` as the last line of output and exit code 2
(:func:`stop`), instead of MONAI's wrapped traceback. Per-case input problems are not stopped here: inference records
them in ``errors.csv`` and goes on.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from torch import nn

from bundle.data.datalist import load_cases, resolve_datalist
from bundle.data.readers import error_message
from bundle.io import remove_stale_temporaries
from bundle.workflows.checkpoints import TrainedModel, read_checkpoint, require_checkpoint
from bundle.workflows.cpu import emulated_isa_cache_warning
from bundle.workflows.memory import reuse_heap_memory
from bundle.workflows.setup import mean_baseline_mae, rank_zero_first

__all__ = [
    "stop",
    "or_exit",
    "check_booleans",
    "read_datalist",
    "read_section",
    "read_model",
    "TrainingPreflight",
    "InferencePreflight",
    "check_training_settings",
    "check_training_set",
    "check_output_dir",
    "training_disk_mb",
]

T = TypeVar("T")
EXIT_BAD_INPUT = 2
"""Exit code of a run stopped by a check (the usual code of a command-line usage error)."""
EVENTS_MB_PER_EPOCH = 0.15
"""TensorBoard events per epoch (the validation patch pair as an image, the epoch scalars): 9.0 MB / 70 epochs
measured on the demo run, rounded up."""
EVENTS_MB_PER_ITERATION = 0.0005
"""TensorBoard scalars of one training iteration (loss and its terms)."""

logger = logging.getLogger(__name__)


def stop(message: str) -> NoReturn:
    """End the workflow: ``error: message`` as the last line on stderr and exit code 2.

    Raises ``SystemExit``, which MONAI's config evaluation does not wrap, so no traceback follows the line.
    """
    logging.shutdown()
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def or_exit(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``; a ``ValueError`` or ``OSError`` (bad datalist, missing or unfitting checkpoint,
    malformed calibration file) :func:`stop` s the workflow with its one-line message."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError) as err:
        stop(error_message(err))


def read_datalist(datalist: str | os.PathLike, bundle_root: str | os.PathLike = ".") -> str:
    """The datalist's path (the demo cohort generated on first use, by rank 0 first under torchrun); a missing or
    unreadable datalist :func:`stop` s the workflow."""
    return or_exit(rank_zero_first, resolve_datalist, datalist, bundle_root)


def read_section(
    datalist_file: str | os.PathLike, section: str, dataset_dir: str | os.PathLike, validate: bool = False
) -> list[dict[str, Any]]:
    """The cases of one datalist section with absolute paths (``validate``: every case checked up front, as training
    needs); a bad datalist :func:`stop` s the workflow with its one-line message."""
    return or_exit(load_cases, datalist_file, section, dataset_dir, validate=validate)


def read_model(ckpt_path: str | os.PathLike) -> Any:
    """The checkpoint at ``ckpt_path``, read once (:func:`~bundle.workflows.checkpoints.read_checkpoint`); an
    unloadable file :func:`stop` s the workflow with its one-line message. No file yet gives an empty record (the
    ``network_def`` defaults, so MONAI tools such as ``verify_net_in_out`` build the network without weights), which
    :class:`InferencePreflight` refuses before any data is read."""
    if not Path(ckpt_path).is_file():
        return TrainedModel(Path(ckpt_path), sha256=None)
    return or_exit(read_checkpoint, ckpt_path)


def check_booleans(settings: Mapping[str, Any]) -> None:
    """Stop on a boolean setting that is not a boolean. ``python -m bundle run`` reads ``true``/``false`` as
    booleans (:class:`~bundle.workflows.overrides.CheckedConfigWorkflow`); plain ``python -m monai.bundle run`` passes
    ``--amp false`` on as the text ``'false'``, which Python would take as true, so it is refused here."""
    for name, value in settings.items():
        if not isinstance(value, bool):
            stop(
                f"{name} must be true or false, got {value!r} (python -m bundle run reads true/false; "
                f"python -m monai.bundle run needs --{name} True or --{name} False)"
            )


def check_training_settings(num_epochs: Any, batch_size: Any, learning_rate: Any) -> None:
    """Stop on settings the libraries would refuse deep inside the engine (before any data is read)."""
    for name, value in (("num_epochs", num_epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            stop(f"{name} must be a positive integer, got {value!r}")
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not (math.isfinite(learning_rate) and learning_rate > 0)
    ):
        stop(f"learning_rate must be a positive number, got {learning_rate!r}")


def check_training_set(n_train: int, batch_size: int) -> None:
    """Stop on a training set without one full batch (the loader drops the incomplete last batch, so such a run
    would train nothing)."""
    if n_train < batch_size:
        stop(
            f"the training set has {n_train} cases, fewer than batch_size {batch_size}: no full batch to train on "
            "(incomplete batches are dropped); lower --batch_size or add cases"
        )


def check_output_dir(path: str | os.PathLike, required_mb: float = 0.0) -> None:
    """Stop (before the first epoch) if ``path`` cannot be created or written, or lacks ``required_mb`` of disk.

    The write probe is an unpredictable name created exclusively (``tempfile``: ``O_EXCL``, so a planted link is
    never followed), then removed.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        stop(f"output folder {folder} is not writable: {err.strerror or err}")
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < required_mb:
        stop(f"only {free_mb:.0f} MB free in {folder}; this run writes about {required_mb:.0f} MB")


def training_disk_mb(network: nn.Module, num_epochs: int, iterations_per_epoch: int) -> float:
    """Disk one training run writes: model + Adam moments in the two full-state checkpoints (and the file being
    replaced), ``model.pt``, and the TensorBoard events."""
    params_mb = sum(p.numel() * p.element_size() for p in network.parameters()) / 2**20
    checkpoints = params_mb * 3 * 3 + params_mb
    events = num_epochs * (EVENTS_MB_PER_EPOCH + EVENTS_MB_PER_ITERATION * iterations_per_epoch)
    return checkpoints + events


class TrainingPreflight:
    """Everything a training run checks and sets before its first step (``initialize``: :meth:`run`, then
    :meth:`check_disk` once the network exists).

    Args:
        device: the training device (CPU: heap reuse, :func:`~bundle.workflows.memory.reuse_heap_memory`).
        booleans: the run's boolean settings by name, checked by :func:`check_booleans`.
        num_epochs, batch_size, learning_rate: checked before any data is read.
        train_cases, val_cases: the two sections (at least one full batch; the training-mean reference MAE).
        output_dir: TensorBoard events and full-state checkpoints.
        ckpt_path: where the best model is saved (its folder must be writable).
        seed: MONAI's ``set_determinism`` seed (with PyTorch's deterministic algorithms when ``booleans`` has
            ``deterministic`` true).
    """

    def __init__(
        self,
        device: Any,
        booleans: Mapping[str, Any],
        num_epochs: Any,
        batch_size: Any,
        learning_rate: Any,
        train_cases: Sequence[dict[str, Any]],
        val_cases: Sequence[dict[str, Any]],
        output_dir: str | os.PathLike,
        ckpt_path: str | os.PathLike,
        seed: int = 0,
    ) -> None:
        self.device, self.booleans, self.seed = device, dict(booleans), seed
        self.settings = (num_epochs, batch_size, learning_rate)
        self.train_cases, self.val_cases = train_cases, val_cases
        self.output_dir, self.ckpt_path = output_dir, ckpt_path

    def run(self) -> None:
        from monai.utils import set_determinism

        check_booleans(self.booleans)
        if self.booleans.get("compile") and (warning := emulated_isa_cache_warning()):
            logger.warning(warning)
        check_training_settings(*self.settings)
        check_training_set(len(self.train_cases), self.settings[1])
        reuse_heap_memory(self.device)
        set_determinism(seed=self.seed, use_deterministic_algorithms=self.booleans.get("deterministic") or None)
        check_output_dir(os.path.dirname(os.path.abspath(self.ckpt_path)))
        mean_baseline_mae(self.train_cases, self.val_cases)

    def check_disk(self, network: nn.Module) -> None:
        """Stop when the output folder lacks the disk this run writes (:func:`training_disk_mb`)."""
        num_epochs, batch_size, _ = self.settings
        check_output_dir(self.output_dir, training_disk_mb(network, num_epochs, len(self.train_cases) // batch_size))


class InferencePreflight:
    """What an inference-side run checks and sets before it reads any case (``initialize``: :meth:`run`).

    Args:
        device: the inference device (CPU: heap reuse).
        booleans: the run's boolean settings by name, checked by :func:`check_booleans`.
        output_dir: must be writable; temporaries of an interrupted earlier run are removed.
        seed: MONAI's ``set_determinism`` seed (the MC dropout masks).
        checkpoint: the run's checkpoint (:func:`read_model`: a missing or unloadable file stops the run before any
            data is read, unless ``booleans`` has ``run_inference`` false); None when the run needs none.
        sbr_max: the run's ``sbr_max``, which must be the one the checkpoint records (a contradicting override
            stops the run in one line naming both values).
    """

    def __init__(
        self,
        device: Any,
        booleans: Mapping[str, Any],
        output_dir: str | os.PathLike,
        seed: int = 0,
        checkpoint: Any = None,
        sbr_max: float | None = None,
    ) -> None:
        self.device, self.booleans, self.output_dir, self.seed = device, dict(booleans), output_dir, seed
        self.checkpoint, self.sbr_max = checkpoint, sbr_max

    def run(self) -> None:
        from monai.utils import set_determinism

        check_booleans(self.booleans)
        if self.checkpoint is not None and self.booleans.get("run_inference", True):
            or_exit(require_checkpoint, self.checkpoint.path)
            or_exit(self.checkpoint.check_sbr_max, self.sbr_max)
        reuse_heap_memory(self.device)
        check_output_dir(self.output_dir)
        remove_stale_temporaries(self.output_dir)
        set_determinism(seed=self.seed)
