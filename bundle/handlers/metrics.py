"""Validation metrics per side and averaged, in SBR units, as Ignite metrics (Table 3 quantities)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import MeanAbsoluteError, Metric, MetricsLambda, RootMeanSquaredError
from ignite.metrics.metric import reinit__is_reduced
from scipy import stats

__all__ = ["PearsonR", "all_gather_rows", "pearson_r", "sbr_metrics", "side_output"]


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation along dim 0 of every rank's ``tensor``, whose lengths may differ (rank order).

    A validation ``DistributedSampler(even_divisible=False)`` gives ranks different numbers of cases, which
    ``idist.all_gather`` alone does not accept.
    """
    if idist.get_world_size() == 1:
        return tensor
    lengths = torch.as_tensor(idist.all_gather(int(tensor.shape[0]))).flatten().tolist()
    shapes = [[int(n), *tensor.shape[1:]] for n in lengths]
    return torch.cat(idist.all_gather_tensors_with_shapes(tensor, shapes), dim=0)


def pearson_r(pred: torch.Tensor, true: torch.Tensor) -> float:
    """scipy's Pearson R in float64; NaN when either side is constant (R is undefined there)."""
    x, y = pred.double().flatten().cpu().numpy(), true.double().flatten().cpu().numpy()
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


class PearsonR(Metric):
    """Pearson correlation over the whole epoch (all ranks), computed by scipy in float64; NaN if undefined.

    Not Ignite's ``PearsonCorrelation``: that one accumulates one-pass moments (E[xy] - E[x]E[y]) in float32 tensors,
    which loses digits when the SBR spread is small against its mean, and it returns 0 instead of "undefined" when a
    side's predictions are constant (the usual state of an untrained regressor).
    """

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._pred: list[torch.Tensor] = []
        self._true: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pred, true = output
        self._pred.append(pred.detach().flatten().double().cpu())
        self._true.append(true.detach().flatten().double().cpu())

    def compute(self) -> float:
        if idist.get_world_size() == 1 and not self._pred:
            raise NotComputableError("PearsonR needs at least one example to be computed.")
        empty = torch.zeros(0, dtype=torch.float64)
        pred = all_gather_rows(torch.cat(self._pred) if self._pred else empty)
        true = all_gather_rows(torch.cat(self._true) if self._true else empty)
        return pearson_r(pred, true)


_METRICS: dict[str, Callable[..., Metric]] = {"mae": MeanAbsoluteError, "rmse": RootMeanSquaredError, "r": PearsonR}


def side_output(side: int) -> Callable[[Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]:
    """Output transform: (prediction, truth) of one side (0 right, 1 left) from a batched engine output."""

    def transform(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return output["pred"][:, side], output["label"][:, side]

    return transform


def sbr_metrics(
    prefix: str = "val_", names: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> dict[str, Metric]:
    """MAE, RMSE and Pearson R for the right and left side and their average, e.g. ``val_mae``, ``val_mae_right``;
    only ``names`` when given (an engine's key metric), without those in ``exclude`` (its additional metrics).

    The averaged value is the arithmetic mean of the two sides, as in the paper's "Avg." columns. Expects an
    engine output dict with batched ``pred`` and ``label`` of shape [B, 2] in SBR units (``decollate=False``, after
    the :class:`~bundle.data.transforms.SBRUnitsd` postprocessing).
    """
    metrics: dict[str, Metric] = {}
    for name, metric_cls in _METRICS.items():
        right = metric_cls(output_transform=side_output(0))
        left = metric_cls(output_transform=side_output(1))
        metrics[f"{prefix}{name}"] = MetricsLambda(lambda a, b: (a + b) / 2, right, left)
        metrics[f"{prefix}{name}_right"] = right
        metrics[f"{prefix}{name}_left"] = left
    return {k: v for k, v in metrics.items() if (names is None or k in names) and k not in exclude}
