"""Checks that run before any engine starts, and the way a workflow stops on bad input: one line, exit code 2.

A workflow's datalist, arguments, output folder and calibration file are checked first; a problem ends the run with
``error: <one line>`` as the last line of output and exit code 2 (:func:`stop`), instead of MONAI's wrapped
traceback. Per-case input problems are not stopped here: inference records them in ``errors.csv`` and goes on.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from torch import nn

from bundle.data.readers import error_message
from bundle.workflows import overrides

__all__ = [
    "stop",
    "or_exit",
    "check_command_line",
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


def check_command_line() -> None:
    """Stop when an override id of this ``monai.bundle run`` command line is defined by none of its config files
    (a typo such as ``--num_epoch 2`` would otherwise be ignored): the first step of every workflow."""
    if (problem := overrides.check_command_line()) is not None:
        stop(problem)


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
