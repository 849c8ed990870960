"""The learning-rate schedule of training, stepped once per iteration by Ignite's ``LrScheduleHandler``.

``one_cycle`` (the default since 0.11) is PyTorch's ``OneCycleLR`` (Smith & Topin 2019): a cosine warm-up from
``learning_rate / 25`` to ``learning_rate`` over the first ``warmup_fraction`` of all iterations, then a cosine
decay to ``learning_rate / 25000`` at the last one; Adam's betas are left alone. ``constant`` keeps
``learning_rate`` throughout, as the paper's protocol does. Why one cycle: docs/performance.md ("The training
recipe"). The schedule object is part of the training checkpoint, so a resumed run continues it.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LRScheduler, OneCycleLR

__all__ = ["LR_SCHEDULES", "learning_rate_schedule"]

LR_SCHEDULES = ("one_cycle", "constant")
WARMUP_START_DIVISOR = 25.0
"""The warm-up starts at ``learning_rate`` divided by this (``OneCycleLR``'s default)."""
FINAL_DIVISOR = 1000.0
"""The last iteration runs at the warm-up's start divided by this (``learning_rate / 25000``)."""


def learning_rate_schedule(
    optimizer: Optimizer, kind: str, num_epochs: int, steps_per_epoch: int, warmup_fraction: float = 0.125
) -> LRScheduler:
    """The per-iteration schedule ``kind`` (one of :data:`LR_SCHEDULES`) of ``optimizer``, whose learning rate is
    the peak, over ``num_epochs`` epochs of ``steps_per_epoch`` iterations.

    Raises:
        ValueError: an unknown ``kind`` or a ``warmup_fraction`` outside (0, 1), in one line.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}")
    if kind == "constant":
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not 0.0 < warmup_fraction < 1.0:
        raise ValueError(f"lr_warmup_fraction must be between 0 and 1 (exclusive), got {warmup_fraction}")
    return OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=max(1, num_epochs * steps_per_epoch),
        pct_start=warmup_fraction,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=WARMUP_START_DIVISOR,
        final_div_factor=FINAL_DIVISOR,
    )
