"""Losses of the paper: the symmetric regression loss (eq. 2, 5-7) and the single-side loss of the ablation (eq. 1).

Each equation is one function below; the loss modules only combine them and reduce over patients. Written by hand
because these are the paper's own equations. All quantities are in normalised SBR units (SBR / sbr_max), so
``alpha`` is too (paper: 0.04).
"""

from __future__ import annotations

from typing import Literal

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from bundle.constants import side_index

__all__ = [
    "MarginForm",
    "single_side_term",
    "regression_term",
    "symmetric_margin",
    "symmetry_term",
    "final_loss",
    "SymmetricRegressionLoss",
    "SingleSideLoss",
]

MarginForm = Literal["clip", "hinge"]


def single_side_term(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1: (y - F(x))^2 per patient, for one side's predictions and targets [B]."""
    return (target - pred) ** 2


def regression_term(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2 (inside the expectation): (y_r - F(x_r))^2 + (y_l - F(x_l))^2 per patient, from [B, 2] (right, left)."""
    return single_side_term(pred, target).sum(dim=1)


def symmetric_margin(sq_diff: torch.Tensor, alpha: float, form: MarginForm = "clip") -> torch.Tensor:
    """Eq. 6: the margin on the squared right-left difference a = (F(x_r) - F(x_l))^2.

    ``"clip"`` is eq. 6 of the paper: clip(a, alpha^2) = a if a > alpha^2 else 0.
    ``"hinge"`` is the original public release: max(a, alpha^2) - alpha^2 (same gradient, no jump at the margin).
    """
    margin = alpha * alpha
    if form == "clip":
        return torch.where(sq_diff > margin, sq_diff, torch.zeros_like(sq_diff))
    if form == "hinge":
        return torch.clamp(sq_diff, min=margin) - margin
    raise ValueError(f"form must be 'clip' or 'hinge', got {form!r}.")


def symmetry_term(pred: torch.Tensor, alpha: float, form: MarginForm = "clip") -> torch.Tensor:
    """Eq. 5 (inside the expectation): clip((F(x_r) - F(x_l))^2, alpha^2) per patient, from [B, 2] predictions."""
    return symmetric_margin((pred[:, 0] - pred[:, 1]) ** 2, alpha, form)


def final_loss(reg: torch.Tensor, sym: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 7: L_final = L_reg + beta * L_sym (per patient; the expectation is the loss's reduction)."""
    return reg + beta * sym


class SymmetricRegressionLoss(_Loss):
    """L_final = L_reg + beta * L_sym (eq. 7) for paired predictions (right, left), reduced over patients.

    L_reg is eq. 2 (:func:`regression_term`), L_sym eq. 5 (:func:`symmetry_term`) with the margin of eq. 6
    (``form="clip"``, default) or the public release's max(a, alpha^2) - alpha^2 (``form="hinge"``). The
    expectations E[.] of the paper are the ``reduction`` over patients ("mean" by default).

    Args:
        alpha: margin below which right-left prediction differences are not penalised (normalised units).
        beta: weight of L_sym; 0 gives the plain paired regression loss.
        form: ``"clip"`` (eq. 6) or ``"hinge"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-patient losses, shape [B]).
    """

    def __init__(
        self,
        alpha: float = 0.04,
        beta: float = 1.0,
        form: MarginForm = "clip",
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}.")
        if form not in ("clip", "hinge"):
            raise ValueError(f"form must be 'clip' or 'hinge', got {form!r}.")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.form: MarginForm = form

    @staticmethod
    def _check(input: torch.Tensor, target: torch.Tensor) -> None:
        if input.ndim != 2 or input.shape[1] != 2:
            raise ValueError(f"input must have shape [B, 2] (right, left), got {tuple(input.shape)}.")
        if target.shape != input.shape:
            raise ValueError(f"target shape {tuple(target.shape)} does not match input shape {tuple(input.shape)}.")

    def _reduce(self, per_patient: torch.Tensor) -> torch.Tensor:
        if self.reduction == LossReduction.MEAN.value:
            return per_patient.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_patient.sum()
        return per_patient

    def components(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-patient terms: ``reg`` (eq. 2), ``sym`` (eq. 5, unweighted), ``beyond`` (1 where |F_r - F_l| > alpha)."""
        self._check(input, target)
        beyond = ((input[:, 0] - input[:, 1]) ** 2 > self.alpha**2).to(input.dtype)
        return {"reg": regression_term(input, target), "sym": symmetry_term(input, self.alpha, self.form),
                "beyond": beyond}  # fmt: skip

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: predictions [B, 2] = (F(x_r), F(x_l)), normalised SBR.
            target: true normalised SBR [B, 2] = (y_r, y_l).
        """
        terms = self.components(input, target.to(input.dtype))
        return self._reduce(final_loss(terms["reg"], terms["sym"], self.beta))


class SingleSideLoss(SymmetricRegressionLoss):
    """Eq. 1 on one side: (y_side - F(x_side))^2 per patient; no symmetric term (L_sym = 0, beta = 0).

    Keeps :meth:`SymmetricRegressionLoss.components` so that ``SymmetricLossHandler`` logs it unchanged.
    """

    def __init__(self, side: int | str, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(alpha=0.0, beta=0.0, reduction=reduction)
        self.side = side_index(side)

    def components(self, input: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check(input, target)
        reg = single_side_term(input[:, self.side], target[:, self.side])
        zeros = torch.zeros_like(reg)
        return {"reg": reg, "sym": zeros, "beyond": zeros}
