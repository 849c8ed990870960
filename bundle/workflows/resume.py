"""Exact resume and guards of a training run.

- :class:`TrainingState` adds RNG states (torch, numpy, python, every random transform) and the best-model
  bookkeeping to a full-state checkpoint, as tensors and plain numbers only (``weights_only``-loadable).
- :class:`EpochSampler` shuffles with a per-epoch seed and can skip the already trained part of an epoch, so
  that resuming from a mid-epoch checkpoint replays exactly the remaining batches.
- :func:`resume_training` loads the latest checkpoint and keeps only the checkpoints the savers' policy keeps;
  :class:`NonFiniteLossGuard` stops on NaN/Inf.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.transforms import Randomizable
from torch.utils.data.distributed import DistributedSampler

from bundle.workflows.savers import AtomicCheckpointSaver

__all__ = [
    "TrainingState",
    "EpochSampler",
    "latest_checkpoint",
    "resume_training",
    "start_training",
    "NonFiniteLossGuard",
]

logger = logging.getLogger(__name__)


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
            "cached": cached}  # fmt: skip


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached"])))


def _random_transforms(obj: Any, found: list[Randomizable] | None = None) -> list[Randomizable]:
    """Every Randomizable reachable from ``obj`` (a Compose, its transforms and the array transforms wrapped by
    dictionary transforms, each with its own random state), in a fixed order, each once."""
    found = [] if found is None else found
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _random_transforms(item, found)
        return found
    if not hasattr(obj, "__dict__") or any(obj is f for f in found):
        return found
    if isinstance(obj, Randomizable):
        found.append(obj)
    for key, value in vars(obj).items():
        if key != "R" and (isinstance(value, (list, tuple)) or hasattr(value, "set_random_state")):
            _random_transforms(value, found)
    return found


class TrainingState:
    """Everything beyond model, optimizer and trainer that an exact resume needs.

    RNG states of torch (dropout), numpy, python and of each random transform of ``transform``, and the
    validation bookkeeping: the evaluator's best metric/epoch and the best-model saver's record, so a resumed
    run does not overwrite a better ``model.pt``.
    """

    def __init__(
        self, transform: Any = None, evaluator: Engine | None = None, best_saver: AtomicCheckpointSaver | None = None
    ) -> None:
        self.transforms = _random_transforms(transform) if transform is not None else []
        self.evaluator = evaluator
        self.best_saver = best_saver

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
            "transforms": [],
        }
        for t in self.transforms:
            _, keys, pos, has_gauss, cached = t.R.get_state()
            state["transforms"].append([torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached])
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self.evaluator is not None:
            state["best_metric"] = float(getattr(self.evaluator.state, "best_metric", -1))
            state["best_metric_epoch"] = int(getattr(self.evaluator.state, "best_metric_epoch", -1))
        if self.best_saver is not None:
            state["best_saved"] = [[float(p), str(f)] for p, f in self.best_saver.state_dict()["_saved"]]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        _set_numpy_state(state["numpy"])
        python = list(state["python"])
        random.setstate((python[-2], tuple(int(v) for v in python[:-2]), python[-1]))
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError("checkpoint was written with a different training pipeline (random transforms differ)")
        for t, (keys, pos, has_gauss, cached) in zip(self.transforms, state["transforms"], strict=True):
            t.R.set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        if self.evaluator is not None and "best_metric" in state:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if self.best_saver is not None and "best_saved" in state:
            self.best_saver.load_state_dict({"_saved": [(float(p), str(f)) for p, f in state["best_saved"]]})


class EpochSampler(DistributedSampler):
    """Single-process shuffling with a per-epoch seed (``seed + epoch``, reproducible whatever happened before)
    and :meth:`skip` to drop the first samples of the next epoch once — the part trained before an interruption.

    A one-replica ``DistributedSampler``, so MONAI's engines call ``set_epoch`` at every epoch start.
    """

    def __init__(self, data_source: Sequence[Any], seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(data_source, num_replicas=1, rank=0, shuffle=shuffle, seed=int(seed))  # type: ignore[arg-type]
        self._skip = 0

    def skip(self, n_samples: int) -> None:
        self._skip = int(n_samples)

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(order[skip:])


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The most advanced full-state checkpoint (highest trainer iteration) in ``checkpoint_dir``."""
    best: tuple[int, Path] | None = None
    for path in Path(checkpoint_dir).glob("*.pt"):
        try:
            iteration = int(torch.load(path, map_location="cpu", weights_only=True)["trainer"]["iteration"])
        except Exception as err:  # unreadable or foreign file: never resume from it
            logger.warning("ignoring %s: not a readable training checkpoint (%s)", path, type(err).__name__)
            continue
        if best is None or iteration > best[0]:
            best = (iteration, path)
    return None if best is None else best[1]


def resume_training(
    checkpoint_dir: str | os.PathLike,
    to_load: Mapping[str, Any],
    trainer: Engine,
    sampler: Any = None,
    savers: Sequence[AtomicCheckpointSaver | None] = (),
) -> Path | None:
    """Load the latest checkpoint of ``checkpoint_dir`` into ``to_load`` (model, optimizer, trainer, state)
    and make ``sampler`` skip the part of the interrupted epoch that was already trained. Says from where.

    The interval ``savers`` take over the checkpoint files already there
    (:meth:`~bundle.workflows.savers.AtomicCheckpointSaver.adopt_existing`), so that after the resume only the
    checkpoints their policy keeps remain.

    Exact (bit-identical to an uninterrupted run on CPU) with :class:`EpochSampler` and ``num_workers=0``; with
    another sampler (e.g. multi-GPU) a mid-epoch resume restarts the interrupted epoch's data order.
    """
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        logger.warning("resume requested but no checkpoint in %s: starting from scratch", checkpoint_dir)
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    max_epochs = trainer.state.max_epochs
    Checkpoint.load_objects(to_load=dict(to_load), checkpoint=checkpoint)
    trainer.state.max_epochs = max_epochs  # the configured num_epochs, which may extend the interrupted run
    iteration, epoch_length = trainer.state.iteration, trainer.state.epoch_length
    done_in_epoch = iteration % epoch_length if epoch_length else 0
    if isinstance(sampler, EpochSampler) and done_in_epoch:
        sampler.skip(done_in_epoch * trainer.data_loader.batch_size)
    for saver in savers:
        if saver is not None:
            for stale in saver.adopt_existing():
                logger.info("removed %s: older than what the checkpoint policy keeps", stale.name)
    logger.info(
        "resuming from %s: epoch %d, iteration %d (%d of %d iterations of the epoch done)",
        path.name, iteration // epoch_length + (1 if done_in_epoch else 0), iteration, done_in_epoch, epoch_length,
    )  # fmt: skip
    return path


def start_training(
    trainer: Engine,
    savers: Sequence[AtomicCheckpointSaver | None],
    resume: bool,
    checkpoint_dir: str | os.PathLike,
    to_load: Mapping[str, Any],
    sampler: Any = None,
) -> Path | None:
    """The last step before the first iteration (``initialize``): attach the full-state ``savers`` to ``trainer``
    (they reference the trainer, so they cannot sit in its own handler list) and, with ``resume``, continue from the
    latest checkpoint of ``checkpoint_dir`` (:func:`resume_training`). Returns the checkpoint resumed from."""
    for saver in savers:
        if saver is not None:
            saver.attach(trainer)
    return resume_training(checkpoint_dir, to_load, trainer, sampler, savers) if resume else None


class NonFiniteLossGuard:
    """Stop training when the loss is NaN or infinite, naming epoch and iteration.

    Attach it before the checkpoint savers: it raises on ITERATION_COMPLETED before they run, so the last good
    checkpoint stays the latest one.
    """

    def __init__(self, output_transform=lambda output: output["loss"]) -> None:
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        if not np.isfinite(value):
            raise FloatingPointError(
                f"non-finite loss ({value}) at epoch {engine.state.epoch}, iteration {engine.state.iteration}: "
                "training stopped; the last good checkpoint is kept (lower learning_rate or check the data)"
            )
