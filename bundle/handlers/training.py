"""Ignite handlers specific to the symmetric regressor."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from bundle.method.losses import SymmetricRegressionLoss

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["SymmetricLossHandler", "log_best_model"]


class SymmetricLossHandler:
    """Record the two terms of the symmetric loss and how often the alpha margin is exceeded.

    On every training iteration it recomputes, from the engine output (no gradient), the batch means of
    ``loss_reg`` (L_reg, eq. 2), ``loss_sym`` (L_sym, eq. 5, before the beta weight) and ``beyond_margin`` (the
    fraction of pairs with |F(x_r) - F(x_l)| > alpha). Iteration values go to ``engine.state.metrics`` and, if a
    ``summary_writer`` is given, to TensorBoard under ``{tag_prefix}iteration/``; at the end of each epoch the
    epoch means replace them in ``engine.state.metrics`` (so StatsHandler / TensorBoardStatsHandler attached
    after this handler log them) and are written to the log.

    Args:
        loss_function: the training loss, whose ``components`` define the terms.
        output_transform: maps ``engine.state.output`` to (pred [B, 2], label [B, 2]); default
            ``from_engine(["pred", "label"])``.
        summary_writer: optional TensorBoard writer for per-iteration scalars.
        tag_prefix: TensorBoard tag prefix.
        name: logger name.
    """

    names = ("loss_reg", "loss_sym", "beyond_margin")

    def __init__(
        self,
        loss_function: SymmetricRegressionLoss,
        output_transform: Callable[[Any], Any] | None = None,
        summary_writer: SummaryWriter | None = None,
        tag_prefix: str = "train/",
        name: str | None = "SymmetricLossHandler",
    ) -> None:
        self.loss_function = loss_function
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.summary_writer = summary_writer
        self.tag_prefix = tag_prefix
        self.logger = logging.getLogger(name)
        self._sums = dict.fromkeys(self.names, 0.0)
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._sums = dict.fromkeys(self.names, 0.0)
        self._count = 0

    def iteration_completed(self, engine: Engine) -> None:
        pred, label = self.output_transform(engine.state.output)
        if isinstance(pred, (list, tuple)):
            pred, label = torch.stack(list(pred)), torch.stack(list(label))
        with torch.no_grad():
            terms = self.loss_function.components(pred.detach().float(), label.detach().float())
        values = dict(zip(self.names, (float(terms[k].mean()) for k in ("reg", "sym", "beyond")), strict=True))
        batch = int(pred.shape[0])
        for key, value in values.items():
            self._sums[key] += value * batch
            engine.state.metrics[key] = value
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(f"{self.tag_prefix}iteration/{key}", value, engine.state.iteration)
        self._count += batch

    def epoch_completed(self, engine: Engine) -> None:
        if self._count == 0:
            return
        means = {k: v / self._count for k, v in self._sums.items()}
        engine.state.metrics.update(means)
        self.logger.info(
            "Epoch[%d] L_reg %.5f  L_sym %.5f  beyond alpha margin %.1f%%",
            engine.state.epoch,
            means["loss_reg"],
            means["loss_sym"],
            100 * means["beyond_margin"],
        )


def log_best_model(evaluator: Engine, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    """Log (and return) the last line of a training run: the best validation key metric, its epoch and where the
    model and the run's other files went, e.g. ``best model: val_mae 0.253 at epoch 69 -> models/model.pt``."""
    state = evaluator.state
    name = getattr(state, "key_metric_name", None)
    if name is None or getattr(state, "best_metric_epoch", -1) < 1:
        line = f"no validation ran, so no best model was saved; checkpoints and TensorBoard events -> {output_dir}"
    else:
        line = (
            f"best model: {name} {state.best_metric:.4f} at epoch {state.best_metric_epoch} -> "
            f"{os.path.normpath(ckpt_path)} (checkpoints and TensorBoard events -> {os.path.normpath(output_dir)})"
        )
    logging.getLogger(__name__).info(line)
    return line


def finish_training(
    evaluator: Engine, summary_writer: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike
) -> str | None:
    """The end of a training run (``finalize``): close the TensorBoard writer, log the last line
    (:func:`log_best_model`) on rank 0 and leave the torchrun process group, if any, once every rank got there."""
    import torch.distributed as dist

    if summary_writer is not None:
        summary_writer.close()
    distributed = dist.is_available() and dist.is_initialized()
    line = log_best_model(evaluator, ckpt_path, output_dir) if not distributed or dist.get_rank() == 0 else None
    if distributed:
        # every rank reaches the end before any leaves: a rank that tears gloo down while its peer still
        # works can abort at exit ("terminate called without an active exception", seen once in CI)
        dist.barrier()
        dist.destroy_process_group()
    return line
