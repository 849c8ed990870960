"""Evaluation of predictions against the datalist truths: the paper's Tables 3-5, the 2023 paper's agreement
statistics and the paired tests used to compare models (ablation).

Everything is in SBR units. Library statistics come from scipy / scikit-learn; only the paper's own quantities
(sharpness-CP, from :mod:`bundle.method.uncertainty`) and Lin's concordance correlation (no scipy function) are written
by hand. ``metrics.json`` holds:

- ``table3``: RMSE, MAE, Pearson R and its two-sided p per side; ``avg`` is the mean of the sides (the paper's
  "Avg." columns) with ``p`` the larger side p (both correlations are significant at that level).
- ``table4``: accuracy, sensitivity, specificity per side, abnormal (SBR < 3.401 right / 3.345 left) = positive.
- ``table5``: for plain MC (sigma_side) and symmetric MC (sigma_side + gamma_side sigma_sym, Algorithm 1): the
  sharpness-CP AUC, the optimal (sharpness, CP) point and the sharpness at 95 % CP. Interval widths are divided by
  ``sbr_max`` (the normalised SBR range [0, 1] of the paper, whose optimal widths are ~0.19); the optimal point is
  the curve point closest (Euclidean) to the ideal (sharpness, CP) = (1, 1); "at 95 % CP" is the narrowest
  interval scale k whose CP reaches 0.95.
- ``agreement``: Lin's concordance correlation with its Fisher-z CI, mean absolute and range-normalised residuals
  with normal-approximation CIs (Bae et al. 2023).
- ``intervals``: CP and sharpness of the intervals actually written in ``predictions.csv`` (calibrated or not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    recall_score,
    root_mean_squared_error,
)

from bundle.constants import ABNORMAL_SBR, DEFAULT_SBR_MAX, SIDES
from bundle.evaluation.predictions import EvaluationData
from bundle.evaluation.statistics import fisher_z_interval, lins_ccc, mean_interval
from bundle.method.uncertainty import sharpness_cp_auc, sharpness_cp_curve, symmetric_intervals

__all__ = [
    "regression_table",
    "binary_agreement",
    "agreement_table",
    "SharpnessCPCurve",
    "sharpness_cp_points",
    "interval_units",
    "uncertainty_table",
    "interval_table",
    "json_safe",
    "compute_metrics",
]


def _mean_of_sides(per_side: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    return {k: float(np.mean([per_side[s][k] for s in SIDES])) for k in keys}


def regression_table(truth: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    """Table 3: RMSE, MAE (scikit-learn) and Pearson R with its two-sided p (scipy) per side, and their average."""
    table: dict[str, dict[str, float]] = {}
    for i, side in enumerate(SIDES):
        if np.ptp(truth[:, i]) > 0 and np.ptp(pred[:, i]) > 0:
            result = stats.pearsonr(pred[:, i], truth[:, i])
            r, p = float(result.statistic), float(result.pvalue)
        else:
            r = p = math.nan  # undefined for a constant variable
        table[side] = {
            "rmse": float(root_mean_squared_error(truth[:, i], pred[:, i])),
            "mae": float(mean_absolute_error(truth[:, i], pred[:, i])),
            "r": r,
            "p": p,
        }
    table["avg"] = {**_mean_of_sides(table, ("rmse", "mae", "r")), "p": max(table[s]["p"] for s in SIDES)}
    return table


def binary_agreement(true_abnormal: np.ndarray, pred_abnormal: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity (recall of abnormal) and specificity (recall of normal) with the confusion counts."""
    y, yhat = np.asarray(true_abnormal, dtype=int), np.asarray(pred_abnormal, dtype=int)
    (tp, fn), (fp, tn) = confusion_matrix(y, yhat, labels=[1, 0])
    return {
        "accuracy": float(accuracy_score(y, yhat)),
        "sensitivity": float(recall_score(y, yhat, pos_label=1, zero_division=np.nan)),
        "specificity": float(recall_score(y, yhat, pos_label=0, zero_division=np.nan)),
        "tp": int(tp), "fn": int(fn), "fp": int(fp), "tn": int(tn),
    }  # fmt: skip


def agreement_table(truth: np.ndarray, pred: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Bae et al. 2023 agreement per side: Lin's CCC with Fisher-z CI; mean absolute residual |pred - truth| and
    the residual normalised by the observed range of the measured SBR (max - min of this set), with CIs."""
    table: dict[str, Any] = {}
    for i, side in enumerate(SIDES):
        ccc = lins_ccc(pred[:, i], truth[:, i])
        value_range = float(np.ptp(truth[:, i]))
        residual = np.abs(pred[:, i] - truth[:, i])
        table[side] = {
            "ccc": ccc,
            "ccc_ci": list(fisher_z_interval(ccc, len(residual), level)),
            "abs_residual": mean_interval(residual, level),
            "normalised_residual": {
                **mean_interval(residual / value_range if value_range > 0 else residual * math.nan, level),
                "range": value_range,
            },
        }
    table["avg"] = {"ccc": float(np.mean([table[s]["ccc"] for s in SIDES]))}
    table["confidence_level"] = level
    return table


@dataclass(frozen=True)
class SharpnessCPCurve:
    """One side's sharpness-CP curve (§4.4) with its optimal and target-CP points (indices into the arrays)."""

    k: np.ndarray
    cp: np.ndarray
    sharpness: np.ndarray
    unit: np.ndarray
    optimal: int
    at_target: int
    value_range: float
    auc: float

    def point(self, i: int) -> dict[str, float]:
        return {"sharpness": float(self.sharpness[i]), "cp": float(self.cp[i]), "k": float(self.k[i]),
                "normalised_width": float(np.mean(2 * self.k[i] * self.unit) / self.value_range)}  # fmt: skip


def sharpness_cp_points(
    truth: np.ndarray, centre: np.ndarray, unit: np.ndarray, value_range: float, target_cp: float = 0.95
) -> SharpnessCPCurve:
    """The curve of intervals centre +- k * unit (:func:`bundle.method.uncertainty.sharpness_cp_curve`), its AUC
    and the two reported points.

    Optimal: the point closest (Euclidean) to the ideal (sharpness, CP) = (1, 1), the first one on ties.
    At target: the smallest k whose CP reaches ``target_cp``.
    """
    ks, cps, sharp = sharpness_cp_curve(truth, centre, unit, value_range)
    optimal = int(np.argmin((1 - sharp) ** 2 + (1 - cps) ** 2))
    at_target = int(np.argmax(cps >= target_cp - 1e-12))
    auc = sharpness_cp_auc(truth, centre, unit, value_range)
    return SharpnessCPCurve(ks, cps, sharp, np.asarray(unit, dtype=np.float64), optimal, at_target, value_range, auc)


def interval_units(data: EvaluationData, gamma_r: float, gamma_l: float) -> dict[str, np.ndarray]:
    """Per-side interval units [N, 2]: ``mc`` = (sigma_r, sigma_l) (eq. 8); ``symmetric`` = (sigma_r + gamma_r
    sigma_sym, sigma_l + gamma_l sigma_sym) (eq. 10 as in Algorithm 1). Only the modes the predictions support."""
    units: dict[str, np.ndarray] = {}
    if np.isfinite(data.sigma).all():
        units["mc"] = data.sigma
        if np.isfinite(data.sigma_sym).all():
            right, left = symmetric_intervals(data.sigma[:, 0], data.sigma[:, 1], data.sigma_sym, gamma_r, gamma_l)
            units["symmetric"] = np.stack([right, left], axis=1)
    return units


def uncertainty_table(
    truth: np.ndarray, centre: np.ndarray, unit: np.ndarray, value_range: float, target_cp: float = 0.95
) -> dict[str, Any]:
    """Table 5 for one interval mode: per side the sharpness-CP AUC, the optimal point and the point at 95 % CP.

    ``unit`` [N, 2] is the per-side interval unit (sigma or sigma^sym); the curve scales it by k (§4.4). Widths
    are normalised by ``value_range`` (sbr_max for SBR inputs). ``avg`` is the mean of the sides.
    """
    table: dict[str, Any] = {}
    for i, side in enumerate(SIDES):
        curve = sharpness_cp_points(truth[:, i], centre[:, i], unit[:, i], value_range, target_cp)
        table[side] = {
            "auc": curve.auc,
            "optimal": curve.point(curve.optimal),
            "at_95": curve.point(curve.at_target),
        }
    keys = ("sharpness", "cp", "normalised_width")
    table["avg"] = {
        "auc": float(np.mean([table[s]["auc"] for s in SIDES])),
        "optimal": _mean_of_sides({s: table[s]["optimal"] for s in SIDES}, keys),
        "at_95": _mean_of_sides({s: table[s]["at_95"] for s in SIDES}, keys),
    }
    return table


def interval_table(data: EvaluationData, value_range: float) -> dict[str, Any] | None:
    """CP, mean width (SBR) and sharpness of the intervals in ``predictions.csv``; None if it has none."""
    if np.isnan(data.low).any() or np.isnan(data.high).any():
        return None
    table: dict[str, Any] = {}
    for i, side in enumerate(SIDES):
        inside = (data.low[:, i] <= data.truth[:, i]) & (data.truth[:, i] <= data.high[:, i])
        width = float(np.mean(data.high[:, i] - data.low[:, i]))
        table[side] = {"cp": float(np.mean(inside)), "mean_width": width,
                       "sharpness": float(np.clip(1 - width / value_range, 0, 1))}  # fmt: skip
    table["avg"] = _mean_of_sides(table, ("cp", "mean_width", "sharpness"))
    return table


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN / inf become None (``write_json`` refuses NaN), numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def compute_metrics(
    data: EvaluationData, gamma_r: float, gamma_l: float, sbr_max: float = DEFAULT_SBR_MAX, level: float = 0.95
) -> dict[str, Any]:
    """All of ``metrics.json`` (see the module docstring) from paired predictions; JSON-safe (NaN -> None)."""
    truth_abnormal, pred_abnormal = data.abnormal(data.truth), data.abnormal(data.pred)
    table4 = {side: binary_agreement(truth_abnormal[:, i], pred_abnormal[:, i]) for i, side in enumerate(SIDES)}
    table4["avg"] = _mean_of_sides(table4, ("accuracy", "sensitivity", "specificity"))
    units = interval_units(data, gamma_r, gamma_l)
    table5 = {mode: uncertainty_table(data.truth, data.pred, unit, sbr_max) for mode, unit in units.items()} or None
    metrics = {
        "n": data.n,
        "table3": regression_table(data.truth, data.pred),
        "table4": table4,
        "table5": table5,
        "agreement": agreement_table(data.truth, data.pred, level),
        "intervals": interval_table(data, sbr_max),
        "settings": {
            "sbr_max": sbr_max,
            "abnormal_below": dict(ABNORMAL_SBR),
            "gamma_r": gamma_r,
            "gamma_l": gamma_l,
            "avg": "arithmetic mean of the right and left values; table3 avg p = the larger side p",
            "width_normalisation": "mean full interval width / sbr_max (normalised SBR range [0, 1])",
            "optimal_point": "curve point closest (Euclidean) to (sharpness, CP) = (1, 1)",
            "at_95": "smallest interval scale k with CP >= 0.95",
            "ccc_ci": f"Fisher z: tanh(atanh(rho_c) -+ z / sqrt(n - 3)), level {level}",
            "residual_ci": f"normal approximation: mean -+ z * SD / sqrt(n), level {level}",
            "normalised_residual": "|pred - truth| / (max - min of the measured SBR of this set, per side)",
            "missing_predictions": data.missing,
            "unlabelled_predictions": data.unlabelled,
        },
    }
    return json_safe(metrics)
