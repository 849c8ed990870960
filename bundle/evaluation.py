"""Evaluation of predictions against the datalist truths: the paper's Tables 3-5, the 2023 paper's agreement
statistics and the paired tests used to compare models (ablation).

Everything is in SBR units. Library statistics come from scipy / scikit-learn; only the paper's own quantities
(sharpness-CP, from :mod:`bundle.uncertainty`) and Lin's concordance correlation (no scipy function) are written
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

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    recall_score,
    root_mean_squared_error,
)

from bundle.io import write_json
from bundle.metrics import ABNORMAL_SBR
from bundle.uncertainty import sharpness_cp_auc, sharpness_cp_curve, symmetric_intervals

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from bundle.inference import IntervalSettings

__all__ = [
    "SIDES",
    "FIGURES",
    "EvaluationData",
    "read_predictions",
    "load_truths",
    "pair_predictions",
    "lins_ccc",
    "fisher_z_interval",
    "mean_interval",
    "regression_table",
    "binary_agreement",
    "agreement_table",
    "SharpnessCPCurve",
    "sharpness_cp_points",
    "interval_units",
    "uncertainty_table",
    "interval_table",
    "compute_metrics",
    "paired_ttest",
    "mcnemar_exact",
    "json_safe",
    "needs_inference",
    "Evaluation",
]

SIDES = ("right", "left")
FIGURES = ("right_left_sbr", "pred_vs_measured", "bland_altman", "sharpness_cp", "residual_histogram")
"""PNG files written next to ``metrics.json`` (``{name}.png``)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationData:
    """Predictions paired with truths, one row per patient, columns (right, left), SBR units.

    ``sigma``, ``sigma_sym``, ``low`` and ``high`` are NaN where ``predictions.csv`` left them empty
    (deterministic inference, or the separate single-side models of the ablation, which have no sigma_sym).
    """

    ids: list[str]
    truth: np.ndarray
    pred: np.ndarray
    sigma: np.ndarray
    sigma_sym: np.ndarray
    low: np.ndarray
    high: np.ndarray
    missing: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def abs_error(self) -> np.ndarray:
        """|prediction - truth| per patient and side [N, 2]."""
        return np.abs(self.pred - self.truth)

    def abnormal(self, values: np.ndarray) -> np.ndarray:
        """1 where ``values`` [N, 2] are below the Table 4 thresholds (abnormal = positive)."""
        thresholds = np.array([ABNORMAL_SBR[s] for s in SIDES])
        return (values < thresholds).astype(int)


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else math.nan


def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``predictions.csv`` as ``{id: {column: value}}``; empty cells become NaN."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "sbr_right" not in rows[0]:
        raise ValueError(f"{path}: not a predictions.csv (columns {list(rows[0])})")
    return {row["id"]: {k: _float(v) for k, v in row.items() if k != "id"} for row in rows}


def load_truths(
    datalist: str | os.PathLike, section: str, dataset_dir: str | os.PathLike | None = None
) -> dict[str, tuple[float, float]]:
    """``{id: (sbr_right, sbr_left)}`` of the cases of ``section`` that give both SBRs, in datalist order."""
    from bundle.data import load_cases

    truths = {}
    for case in load_cases(datalist, section, dataset_dir):
        if case.get("sbr_right") is not None and case.get("sbr_left") is not None:
            truths[str(case["id"])] = (float(case["sbr_right"]), float(case["sbr_left"]))
    return truths


def pair_predictions(
    predictions: Mapping[str, Mapping[str, float]], truths: Mapping[str, tuple[float, float]]
) -> EvaluationData:
    """Patients with both a prediction and a truth, in the truths' (datalist) order."""
    ids = [i for i in truths if i in predictions]
    if not ids:
        raise ValueError("no case has both a prediction and a true SBR (wrong section or predictions.csv?)")

    def column(*names: str) -> np.ndarray:
        return np.array([[predictions[i][n] for n in names] for i in ids], dtype=np.float64)

    return EvaluationData(
        ids=ids,
        truth=np.array([truths[i] for i in ids], dtype=np.float64),
        pred=column("sbr_right", "sbr_left"),
        sigma=column("sigma_right", "sigma_left"),
        sigma_sym=column("sigma_sym")[:, 0],
        low=column("low_right", "low_left"),
        high=column("high_right", "high_left"),
        missing=[i for i in truths if i not in predictions],
        unlabelled=[i for i in predictions if i not in truths],
    )


# --- statistics -----------------------------------------------------------------------------------------------


def lins_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin 1989, Biometrics 45:255; used by Bae et al. 2023).

    rho_c = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2), with the 1/n moments of Lin's definition. scipy has
    no function for it. NaN when both variables are constant and equal.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("lins_ccc needs two equally long samples of at least 2 values")
    sxy = np.mean((x - x.mean()) * (y - y.mean()))
    denominator = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2.0 * sxy / denominator) if denominator > 0 else math.nan


def fisher_z_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a correlation by Fisher's z transform: tanh(atanh(rho) -+ z_q / sqrt(n - 3)).

    The 2023 paper's rule for Lin's CCC (rho_c = 0.7443, n = 74 gives 0.6216-0.8314 there). NaN if n <= 3.
    """
    if n <= 3 or not math.isfinite(rho):
        return math.nan, math.nan
    if abs(rho) >= 1:
        return rho, rho
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    z = math.atanh(rho)
    return math.tanh(z - half), math.tanh(z + half)


def mean_interval(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean, sample SD, median and the normal-approximation CI of the mean (mean -+ z_q * SEM).

    This is the CI of Bae et al. 2023 (their 0.6837 SBR, n = 74, CI 0.5467-0.8207 is reproduced with the sample SD).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "sd": math.nan, "median": float(np.median(values)), "ci": [math.nan, math.nan]}
    sem = float(stats.sem(values))
    low, high = stats.norm.interval(level, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    return {"mean": mean, "sd": float(values.std(ddof=1)), "median": float(np.median(values)),
            "ci": [float(low), float(high)]}  # fmt: skip


def paired_ttest(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Student's paired t-test (scipy ``ttest_rel``, two-sided) of a - b, e.g. per-patient absolute errors."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    result = stats.ttest_rel(a, b)
    return {"mean_difference": float(np.mean(a - b)), "t": float(result.statistic), "p": float(result.pvalue),
            "n": len(a)}  # fmt: skip


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's test, exact form: the discordant pairs b (a right, b wrong) and c (a wrong, b right) against
    Binomial(b + c, 1/2), two-sided (scipy ``binomtest``). p = 1 when there is no discordant pair."""
    a, b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": p, "n": len(a)}


# --- tables -----------------------------------------------------------------------------------------------------


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
    """The curve of intervals centre +- k * unit (:func:`bundle.uncertainty.sharpness_cp_curve`), its AUC and the two
    reported points.

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
    data: EvaluationData, gamma_r: float, gamma_l: float, sbr_max: float = 6.84, level: float = 0.95
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


# --- workflow -----------------------------------------------------------------------------------------------


def needs_inference(predictions_csv: str | os.PathLike, ckpt_path: str | os.PathLike | None = None) -> bool:
    """True when ``predictions_csv`` is missing, or older than the checkpoint (predictions of an earlier model)."""
    csv_path = Path(predictions_csv)
    if not csv_path.is_file():
        logger.info("no %s: running inference first", csv_path)
        return True
    if ckpt_path and Path(ckpt_path).is_file() and Path(ckpt_path).stat().st_mtime > csv_path.stat().st_mtime:
        logger.info("%s is older than %s: running inference again", csv_path, ckpt_path)
        return True
    logger.info("evaluating the existing %s", csv_path)
    return False


def _all_truths(datalist: str | os.PathLike) -> dict[str, np.ndarray]:
    """True (right, left) SBR of every labelled case of every section, for the right-left scatter (Fig. 2)."""
    content = json.loads(Path(datalist).read_text())
    out = {}
    for section, cases in content.items():
        pairs = [(c["sbr_right"], c["sbr_left"]) for c in cases if isinstance(c, dict)
                 and c.get("sbr_right") is not None and c.get("sbr_left") is not None]  # fmt: skip
        if pairs:
            out[section] = np.array(pairs, dtype=np.float64)
    return out


class Evaluation:
    """Evaluate ``predictions_csv`` against the ``section`` truths; write ``metrics.json`` and the figures.

    Args:
        predictions_csv: ``predictions.csv`` of the inference workflow.
        datalist: datalist JSON holding the truths (``sbr_right``/``sbr_left``).
        section: datalist section that was predicted (``test`` by default in ``configs/evaluate.json``).
        output_dir: where ``metrics.json`` and the PNGs go (written atomically).
        dataset_dir: base of the datalist's relative paths (only used to read the section).
        symmetric_settings: interval settings whose gammas define the symmetric MC intervals of Table 5
            (``bundle.inference.load_interval_settings(..., "symmetric", ...)``: calibration.json or the defaults).
        sbr_max: normalisation of the interval widths.
        confidence_level: level of the agreement CIs.
        figures: write the PNG figures (and log them to TensorBoard).
        summary_writer: optional TensorBoard writer for the figures and the Table 3 scalars.
    """

    def __init__(
        self,
        predictions_csv: str | os.PathLike,
        datalist: str | os.PathLike,
        section: str,
        output_dir: str | os.PathLike,
        dataset_dir: str | os.PathLike | None = None,
        symmetric_settings: IntervalSettings | None = None,
        sbr_max: float = 6.84,
        confidence_level: float = 0.95,
        figures: bool = True,
        summary_writer: SummaryWriter | None = None,
    ) -> None:
        self.predictions_csv = Path(predictions_csv)
        self.datalist, self.section, self.dataset_dir = datalist, section, dataset_dir
        self.output_dir = Path(output_dir)
        self.gamma_r = symmetric_settings.gamma_r if symmetric_settings is not None else 0.5
        self.gamma_l = symmetric_settings.gamma_l if symmetric_settings is not None else 0.5
        self.gamma_source = symmetric_settings.description if symmetric_settings is not None else "default 0.5"
        self.sbr_max = float(sbr_max)
        self.confidence_level = float(confidence_level)
        self.figures = bool(figures)
        self.summary_writer = summary_writer

    def run(self) -> dict[str, Any]:
        truths = load_truths(self.datalist, self.section, self.dataset_dir)
        data = pair_predictions(read_predictions(self.predictions_csv), truths)
        if data.missing:
            logger.warning("%d %s cases have no prediction (see errors.csv): %s", len(data.missing), self.section,
                           ", ".join(data.missing[:10]))  # fmt: skip
        metrics = compute_metrics(data, self.gamma_r, self.gamma_l, self.sbr_max, self.confidence_level)
        metrics["settings"].update(section=self.section, predictions=str(self.predictions_csv),
                                   gamma_source=self.gamma_source)  # fmt: skip
        write_json(self.output_dir / "metrics.json", metrics)
        if self.figures:
            self._figures(data, metrics)
        if self.summary_writer is not None:
            for side in (*SIDES, "avg"):
                for key in ("rmse", "mae", "r"):
                    value = metrics["table3"][side][key]
                    if value is not None:
                        self.summary_writer.add_scalar(f"evaluation/{key}_{side}", value, 0)
            self.summary_writer.flush()
        t3 = metrics["table3"]["avg"]
        logger.info("evaluated %d %s cases: MAE %.4f RMSE %.4f R %.4f (avg of sides) -> %s", data.n, self.section,
                    t3["mae"], t3["rmse"], t3["r"] if t3["r"] is not None else math.nan,
                    self.output_dir / "metrics.json")  # fmt: skip
        return metrics

    def _figures(self, data: EvaluationData, metrics: Mapping[str, Any]) -> None:
        from bundle import plots

        label = f"{self.section} set, n = {data.n}"
        figures = {
            "right_left_sbr": plots.right_left_scatter(_all_truths(self.datalist)),
            "pred_vs_measured": plots.predicted_vs_measured(data.truth, data.pred, data.low, data.high, label),
            "bland_altman": plots.bland_altman(data.truth, data.pred, label),
            "residual_histogram": plots.residual_histogram(data.truth, data.pred, label),
        }
        units = interval_units(data, self.gamma_r, self.gamma_l)
        if units:
            curves = {mode: [sharpness_cp_points(data.truth[:, i], data.pred[:, i], unit[:, i], self.sbr_max)
                             for i in range(len(SIDES))] for mode, unit in units.items()}  # fmt: skip
            notes = {"symmetric": f"γ_r = {self.gamma_r:g}, γ_l = {self.gamma_l:g}"}
            figures["sharpness_cp"] = plots.sharpness_cp_figure(curves, label, notes)
        for name, figure in figures.items():
            plots.save_png(figure, self.output_dir / f"{name}.png")
            if self.summary_writer is not None:
                self.summary_writer.add_figure(f"evaluation/{name}", figure, close=False)
