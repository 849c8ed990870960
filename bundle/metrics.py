"""Validation metrics per side and averaged, in SBR units, as Ignite metrics (Table 3 quantities)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.metrics import EpochMetric, MeanAbsoluteError, Metric, MetricsLambda, RootMeanSquaredError
from scipy import stats

__all__ = ["PearsonR", "sbr_metrics", "side_output"]


def _pearson_r(pred: torch.Tensor, true: torch.Tensor) -> float:
    """scipy's Pearson R in float64; NaN when either side is constant (R is undefined there)."""
    x, y = pred.double().flatten().cpu().numpy(), true.double().flatten().cpu().numpy()
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


class PearsonR(EpochMetric):
    """Pearson correlation over the whole epoch, computed by scipy (exact in float64, NaN if undefined)."""

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        super().__init__(_pearson_r, output_transform=output_transform, check_compute_fn=False, device=device)


_METRICS: dict[str, Callable[..., Metric]] = {"mae": MeanAbsoluteError, "rmse": RootMeanSquaredError, "r": PearsonR}


def side_output(side: int, sbr_max: float) -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]:
    """Output transform: (prediction, truth) of one side (0 right, 1 left) in SBR units from a batched engine output."""

    def transform(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pred, label = output["pred"], output["label"]
        return pred[:, side].float() * sbr_max, label[:, side].float() * sbr_max

    return transform


def sbr_metrics(sbr_max: float = 6.84, prefix: str = "val_") -> dict[str, Metric]:
    """MAE, RMSE and Pearson R for the right and left side and their average, e.g. ``val_mae``, ``val_mae_right``.

    The averaged value is the arithmetic mean of the two sides, as in the paper's "Avg." columns. Expects an
    engine output dict with batched ``pred`` and ``label`` of shape [B, 2] in normalised units (``decollate=False``).
    """
    metrics: dict[str, Metric] = {}
    for name, metric_cls in _METRICS.items():
        right = metric_cls(output_transform=side_output(0, sbr_max))
        left = metric_cls(output_transform=side_output(1, sbr_max))
        metrics[f"{prefix}{name}"] = MetricsLambda(lambda a, b: (a + b) / 2, right, left)
        metrics[f"{prefix}{name}_right"] = right
        metrics[f"{prefix}{name}_left"] = left
    return metrics
