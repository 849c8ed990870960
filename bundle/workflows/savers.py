"""Atomic checkpoint saving with MONAI's ``CheckpointSaver`` convention.

:class:`AtomicCheckpointSaver` takes MONAI's arguments and saves as MONAI's saver does (interval, key metric and
final checkpoints, the same file names), but every file is written to a hidden temporary sibling and renamed into
place (:func:`bundle.io.atomic_open`): a crash during a save leaves the previous file, never a truncated one, and a
fixed file name (``key_metric_filename``, e.g. ``model.pt``) is replaced, never removed first. MONAI's own saver writes
in place because Ignite's atomic mode leaves files readable by their owner only; here they get the mode a plain
``open`` gives (``0o666`` less the umask), so a group can read ``model.pt``. The saver also carries its record of
saved files across a resume (:meth:`~AtomicCheckpointSaver.state_dict`, :meth:`~AtomicCheckpointSaver.adopt_existing`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from bundle.io import atomic_open

__all__ = ["AtomicCheckpointSaver"]


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open`` gives a new file (temporary files get ``0o600``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class _AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` writing through :func:`~bundle.io.atomic_open`, optionally under one fixed file name that
    is replaced, never removed first (so a crash between two saves never leaves the folder without the file)."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        path = self.dirname / (self.filename or filename)
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle, **self.kwargs)
        os.chmod(path, _file_mode())

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` (same arguments, same files) whose saves are atomic.

    Args:
        save_dir: folder of the files.
        save_dict: objects to save (one object: its state dict is the file, as ``model.pt``).
        final_filename: fixed name of the final checkpoint (``save_final``).
        key_metric_filename: fixed name of the best checkpoint (``save_key_metric`` with ``key_metric_n_saved=1``).
        The others: as MONAI's (``save_key_metric``/``key_metric_name``/``key_metric_negative_sign``: keep the best by
        an engine metric; ``save_interval``/``epoch_level``/``n_saved``: keep the last ``n_saved`` of an interval).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        name: str | None = None,
        file_prefix: str = "",
        save_final: bool = False,
        final_filename: str | None = None,
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_n_saved: int = 1,
        key_metric_filename: str | None = None,
        key_metric_save_state: bool = False,
        key_metric_greater_or_equal: bool = False,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 0,
        n_saved: int | None = None,
    ) -> None:
        super().__init__(
            str(save_dir), dict(save_dict), name=name, file_prefix=file_prefix, save_final=save_final,
            final_filename=final_filename, save_key_metric=save_key_metric, key_metric_name=key_metric_name,
            key_metric_n_saved=key_metric_n_saved, key_metric_filename=key_metric_filename,
            key_metric_save_state=key_metric_save_state, key_metric_greater_or_equal=key_metric_greater_or_equal,
            key_metric_negative_sign=key_metric_negative_sign, epoch_level=epoch_level, save_interval=save_interval,
            n_saved=n_saved,
        )  # fmt: skip
        fixed_names = {
            "_final_checkpoint": final_filename,
            "_key_metric_checkpoint": key_metric_filename,
            "_interval_checkpoint": None,
        }
        for attribute, filename in fixed_names.items():
            checkpoint = getattr(self, attribute)
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename)

    def state_dict(self) -> dict[str, Any]:
        """The key-metric record of saved files (``{"_saved": [(score, filename), ...]}``, Ignite's ``Checkpoint``
        state), the counterpart of MONAI's :meth:`load_state_dict`; ``{"_saved": []}`` without key-metric saving."""
        checkpoint = self._key_metric_checkpoint
        return dict(checkpoint.state_dict()) if checkpoint is not None else {"_saved": []}

    def adopt_existing(self) -> list[Path]:
        """Take over the interval files that an earlier run of this saver left in ``save_dir`` (before a resume): the
        newest ``n_saved`` enter its record, so that the next saves replace them by the usual policy, and the older
        ones are deleted. Returns the deleted files. The key-metric record comes from the training state instead
        (:class:`~bundle.workflows.resume.TrainingState`)."""
        checkpoint = self._interval_checkpoint
        if checkpoint is None:
            return []
        pattern = re.compile(rf"^(?:.*_)?{checkpoint.score_name}=(\d+)\.{checkpoint.ext}$")
        found = sorted(
            (int(match.group(1)), path)
            for path in Path(self.save_dir).glob(f"*.{checkpoint.ext}")
            if (match := pattern.match(path.name)) is not None
        )
        n_saved = checkpoint.n_saved or len(found)
        stale = [path for _, path in found[:-n_saved]] if len(found) > n_saved else []
        for path in stale:
            path.unlink()
        checkpoint.load_state_dict({"_saved": [(score, path.name) for score, path in found[-n_saved:]]})
        return stale
