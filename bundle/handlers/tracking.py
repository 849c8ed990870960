"""Experiment tracking (``--tracking mlflow``) with this bundle's engines.

MONAI's default tracking settings append an ``MLFlowHandler`` to ``train#handlers`` / ``validate#handlers`` /
``handlers`` whose ``output_transform`` (``from_engine(["loss"], first=True)``) assumes decollated engine outputs.
This bundle's engines do not decollate (``decollate: false``), so that transform returns a one-element tuple and
MLflow cannot log it. :func:`tracked` adapts such handlers in place when the engine is built: the loss becomes a
float, the best model is logged as an artifact, and a run that stops with an exception is marked ``FAILED``
instead of staying ``RUNNING``. Nothing here imports MLflow; without tracking the handlers pass through unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["tracked", "scalar_loss", "log_evaluation", "flat_metrics"]

logger = logging.getLogger(__name__)


def scalar_loss(transform: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap an output transform so that a one-element tuple or list, or a one-element tensor, becomes a float."""

    def _scalar(output: Any) -> Any:
        value = transform(output)
        if isinstance(value, (tuple, list)) and len(value) == 1:
            value = value[0]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        return value

    return _scalar


def _executed_config_path(path: Any) -> Any:
    """MONAI names the executed config ``output_dir + " + '/config_<time>.json'"``, an expression only when
    ``output_dir`` is one; with a literal ``--output_dir`` the text itself arrives here. Return the file it means."""
    match = re.fullmatch(r"(.+) \+ '/(config_[0-9_]+\.json)'", str(path))
    return os.path.join(match.group(1), match.group(2)) if match else path


class _MarkFailedRun:
    """On an exception in the engine, end the handler's MLflow run with status ``FAILED`` and re-raise."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self)

    def __call__(self, engine: Engine, error: BaseException) -> None:
        run = getattr(self.handler, "cur_run", None)
        if run is not None:
            self.handler.client.set_terminated(run.info.run_id, status="FAILED")
            self.handler.cur_run = None
        raise error


def _mlflow_handlers(handlers: Sequence[Any]) -> list[Any]:
    return [handler for handler in handlers if type(handler).__name__ == "MLFlowHandler"]


def tracked(handlers: Sequence[Any], artifacts: Sequence[str | os.PathLike] = (), keep_open: bool = False) -> list[Any]:
    """``handlers`` with every MLflow handler among them adapted to this bundle's (non-decollated) engines.

    Args:
        handlers: the engine's instantiated handlers (MONAI's tracking settings may have appended an
            ``MLFlowHandler``); disabled ones (None, e.g. rank-0-only handlers on the other ranks) are left out.
        artifacts: files logged to the run when the engine completes (for training: the best model).
        keep_open: leave the run open when the engine completes (:func:`log_evaluation` adds to it and ends it).
    """
    adapted = [handler for handler in handlers if handler is not None]
    for handler in _mlflow_handlers(handlers):
        if keep_open:
            handler.close_on_complete = False
        handler.output_transform = scalar_loss(handler.output_transform)
        existing = handler.artifacts if isinstance(handler.artifacts, (list, tuple)) else [handler.artifacts]
        handler.artifacts = [_executed_config_path(a) for a in existing if a] + [str(a) for a in artifacts]
        adapted.append(_MarkFailedRun(handler))
    return adapted


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested ``metrics`` as ``{"table3/avg/mae": 0.26, ...}`` (booleans and text left out)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flat_metrics(value, f"{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def log_evaluation(
    metrics: Mapping[str, Any], evaluator: Engine, handlers: Sequence[Any], output_dir: str | os.PathLike
) -> Mapping[str, Any]:
    """Log the evaluating workflow's ``metrics`` (flattened) and its files in ``output_dir`` (``metrics.json``,
    figures, ``predictions.csv``) to every MLflow handler's run, then end the run. Starts the run when inference was
    skipped (predictions reused). Returns ``metrics``; without tracking it does nothing."""
    for handler in _mlflow_handlers(handlers):
        if handler.cur_run is None:
            handler.start(evaluator)
        run_id = handler.cur_run.info.run_id
        for name, value in flat_metrics(metrics).items():
            handler.client.log_metric(run_id, name, value)
        for path in sorted(Path(output_dir).iterdir()):
            if path.is_file() and path.suffix in {".json", ".png", ".csv", ".md"}:
                handler.client.log_artifact(run_id, str(path))
        handler.close()
    return metrics
