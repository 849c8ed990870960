"""Symmetric MC-dropout inference: robust case preparation, the MC inferer, and running the evaluator."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.inferers import Inferer
from torch.utils.data import Dataset
from tqdm import tqdm

from bundle.constants import MC_SAMPLES
from bundle.data.readers import error_message

__all__ = ["PreparedCases", "SymmetricMCInferer", "run_evaluator"]

logger = logging.getLogger(__name__)


class PreparedCases(Dataset):
    """Cases run through the deterministic ``transform`` up front; a failing case is recorded, not fatal.

    ``errors`` lists ``{"id": ..., "error": one-line message}`` for the cases that failed, so a batch goes on
    with the other cases and the failures end up in ``errors.csv``.
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], transform: Callable, progress: bool = True) -> None:
        self.items: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        # disable=None: a bar on a terminal only, so that log files hold whole lines
        for case in tqdm(data, desc="Preparing cases", disable=None if progress else True):
            try:
                self.items.append(transform(dict(case)))
            except Exception as err:
                message = error_message(err)
                case_id = str(case.get("id", "?"))
                if not message.startswith(f"{case_id}:"):
                    message = f"{case_id}: {message}"
                logger.error("skipping case: %s", message)
                self.errors.append({"id": case_id, "error": message})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class SymmetricMCInferer(Inferer):
    """Monte-Carlo-dropout inferer for the paired model: ``[B, 2, *patch]`` -> samples ``[B, max(n, 1), 2]``.

    With ``n_samples > 0`` it calls the network's ``mc_forward`` (dropout on, every other layer in eval mode;
    head-only dropout computes the convolutional features once). With ``n_samples = 0`` it returns the
    deterministic prediction (dropout off) as a single sample.
    """

    def __init__(self, n_samples: int = MC_SAMPLES, chunk_size: int = 16) -> None:
        super().__init__()
        if n_samples < 0:
            raise ValueError(f"mc_samples must be >= 0, got {n_samples}")
        self.n_samples = int(n_samples)
        self.chunk_size = int(chunk_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if self.n_samples == 0:
            return network(inputs).unsqueeze(1)
        return network.mc_forward(inputs, self.n_samples, self.chunk_size)


def run_evaluator(evaluator: Engine, handlers: Sequence[Any] = ()) -> None:
    """Run ``evaluator``; if no case could be prepared (so the engine does not even start), still let the
    output handlers (those with ``completed`` and ``summary``) write their files (an empty ``predictions.csv`` and the
    ``errors.csv`` saying why). Ends with each output handler's line saying what it wrote and where."""
    evaluator.run()
    collectors = [handler for handler in handlers if hasattr(handler, "completed") and hasattr(handler, "summary")]
    if not evaluator.state.epoch_length:
        for handler in collectors:
            handler.reset()
            handler.completed(evaluator)
    for handler in collectors:
        if handler.summary:
            logger.info(handler.summary)
