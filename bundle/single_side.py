"""The standard (non-paired) regressor of the ablation, "VGG-small" of Table 3: one model per side, trained with the
plain regression loss of eq. 1 on that side's patches only, through the bundle's own training workflow
(``configs/train.json`` + ``configs/single_side.json``).

Its checkpoint is an ordinary F (``VGGRegressor3D``) state dict, so calibration and inference use the standard
configs; :func:`merge_side_predictions` then takes the right columns from the right model's ``predictions.csv``
and the left ones from the left model's.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping

import torch
from monai.utils import LossReduction
from torch import nn

from bundle.inference import PREDICTION_COLUMNS
from bundle.io import write_csv
from bundle.losses import SymmetricRegressionLoss
from bundle.networks import SymmetricRegressor

__all__ = ["side_index", "SingleSideRegressor", "SingleSideLoss", "merge_side_predictions"]


def side_index(side: int | str) -> int:
    """0 for ``"right"`` / 0, 1 for ``"left"`` / 1."""
    index = {"right": 0, "left": 1}.get(side, side) if isinstance(side, str) else int(side)
    if index not in (0, 1):
        raise ValueError(f"side must be 'right', 'left', 0 or 1, got {side!r}")
    return int(index)


class SingleSideRegressor(SymmetricRegressor):
    """F trained on one side only: in training mode only that side's patch goes through F (one patch per patient,
    as a standard single-side regressor sees) and its prediction fills both output columns, of which the loss uses
    only ``side``; in eval mode it behaves like :class:`SymmetricRegressor` (F applied to both patches), so the
    validation metrics of the trained side are those of that model at inference.
    """

    def __init__(self, regressor: nn.Module, side: int | str, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__(regressor, autocast_dtype)
        self.side = side_index(side)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(pair)
        if pair.ndim < 3 or pair.shape[1] != 2:
            raise ValueError(f"expected a patch pair [B, 2, *spatial] (right, left), got shape {tuple(pair.shape)}.")
        patch = pair[:, self.side : self.side + 1]
        if self.autocast_dtype is None:
            out = self.regressor(patch)
        else:
            with torch.autocast(device_type=patch.device.type, dtype=self.autocast_dtype):
                out = self.regressor(patch)
        return out.float().reshape(-1, 1).expand(-1, 2)


class SingleSideLoss(SymmetricRegressionLoss):
    """Eq. 1 on one side: (y_side - F(x_side))^2 per patient; no symmetric term (L_sym = 0, beta = 0).

    Keeps :meth:`SymmetricRegressionLoss.components` so that ``SymmetricLossHandler`` logs it unchanged.
    """

    def __init__(self, side: int | str, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(alpha=0.0, beta=0.0, reduction=reduction)
        self.side = side_index(side)

    def components(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check(input, target)
        reg = (target[:, self.side] - input[:, self.side]) ** 2
        zeros = torch.zeros_like(reg)
        return {"reg": reg, "sym": zeros, "beyond": zeros}


def _read_rows(path: str | os.PathLike) -> dict[str, Mapping[str, str]]:
    with open(path, newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def merge_side_predictions(
    right_csv: str | os.PathLike, left_csv: str | os.PathLike, output_csv: str | os.PathLike
) -> int:
    """``predictions.csv`` of the pair of single-side models: right columns from ``right_csv``, left columns from
    ``left_csv`` (cases present in both, in ``right_csv`` order). ``sigma_sym`` stays empty: the symmetric hint
    (eq. 9) needs one paired model. Returns the number of rows written."""
    right, left = _read_rows(right_csv), _read_rows(left_csv)
    rows = []
    for case_id, r in right.items():
        if case_id not in left:
            continue
        row = {c: r[c] for c in PREDICTION_COLUMNS if c.endswith("_right")}
        row.update({c: left[case_id][c] for c in PREDICTION_COLUMNS if c.endswith("_left")})
        rows.append({"id": case_id, **row, "sigma_sym": None})
    write_csv(output_csv, PREDICTION_COLUMNS, rows)
    return len(rows)
