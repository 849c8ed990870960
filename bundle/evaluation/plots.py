"""Evaluation figures (matplotlib, object-oriented API, no pyplot state): the paper's Fig. 2 and Fig. 4, predicted
vs measured, Bland-Altman and residual histograms. Every figure carries axis units and a one-line caption."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from bundle.constants import ABNORMAL_SBR, SIDES
from bundle.evaluation.tables import SharpnessCPCurve
from bundle.io import atomic_open

__all__ = [
    "save_png",
    "right_left_scatter",
    "predicted_vs_measured",
    "bland_altman",
    "sharpness_cp_figure",
    "residual_histogram",
]

SBR_LABEL = "striatal SBR (DaT SPECT)"
COLOURS = {"right": "tab:blue", "left": "tab:orange", "mc": "tab:gray", "symmetric": "tab:green"}
MODE_NAMES = {"mc": "MC dropout", "symmetric": "symmetric MC dropout"}
DPI = 120


def _figure(width: float, height: float, caption: str) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.text(0.5, 0.015, caption, ha="center", va="bottom", fontsize=8.5, wrap=True, color="0.2")
    return fig


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Render ``fig`` to PNG bytes and write them atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _sbr_limits(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low or 1.0)
    return min(0.0, low - pad), high + pad


def right_left_scatter(truths: Mapping[str, np.ndarray]) -> Figure:
    """Fig. 2: true right vs left SBR of every labelled case (per datalist section) with Pearson r."""
    everything = np.concatenate(list(truths.values()))
    r = stats.pearsonr(everything[:, 0], everything[:, 1]).statistic if len(everything) > 2 else float("nan")
    fig = _figure(6.0, 6.2, f"True right vs left striatal SBR of all {len(everything)} labelled cases, "
                            f"Pearson r = {r:.3f} (paper Fig. 2: r = 0.93). Dashed: abnormal thresholds.")  # fmt: skip
    ax = fig.add_axes((0.13, 0.17, 0.82, 0.76))
    markers = {"training": "o", "validation": "s", "test": "^"}
    for section, values in truths.items():
        ax.scatter(values[:, 0], values[:, 1], s=14, alpha=0.6, marker=markers.get(section, "o"),
                   label=f"{section} (n = {len(values)})")  # fmt: skip
    low, high = _sbr_limits(everything)
    ax.plot([low, high], [low, high], color="0.5", lw=1, label="identity")
    ax.axvline(ABNORMAL_SBR["right"], color="tab:red", ls="--", lw=0.8)
    ax.axhline(ABNORMAL_SBR["left"], color="tab:red", ls="--", lw=0.8)
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal", xlabel="right striatal SBR (measured)",
           ylabel="left striatal SBR (measured)", title=f"Right vs left SBR, r = {r:.3f}")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def predicted_vs_measured(
    truth: np.ndarray, pred: np.ndarray, low: np.ndarray, high: np.ndarray, label: str = ""
) -> Figure:
    """Predicted vs measured SBR per side, identity line, prediction intervals as error bars (when present)."""
    fig = _figure(11.0, 5.4, f"Predicted (MC mean) vs measured striatal SBR, {label}. Grey line: identity; bars: "
                             "prediction intervals of predictions.csv; dashed: abnormal thresholds.")  # fmt: skip
    lims = _sbr_limits(truth, pred, low, high)
    for i, side in enumerate(SIDES):
        ax = fig.add_axes((0.07 + 0.49 * i, 0.16, 0.41, 0.74))
        has_intervals = bool(np.isfinite(low[:, i]).all() and np.isfinite(high[:, i]).all())
        if has_intervals:
            yerr = np.stack([pred[:, i] - low[:, i], high[:, i] - pred[:, i]])
            ax.errorbar(truth[:, i], pred[:, i], yerr=yerr, fmt="none", ecolor=COLOURS[side], alpha=0.25, lw=1)
        ax.scatter(truth[:, i], pred[:, i], s=16, color=COLOURS[side], zorder=3)
        ax.plot(lims, lims, color="0.4", lw=1)
        ax.axvline(ABNORMAL_SBR[side], color="tab:red", ls="--", lw=0.8)
        ax.axhline(ABNORMAL_SBR[side], color="tab:red", ls="--", lw=0.8)
        r = stats.pearsonr(truth[:, i], pred[:, i]).statistic if np.ptp(pred[:, i]) > 0 else float("nan")
        mae = float(np.mean(np.abs(pred[:, i] - truth[:, i])))
        ax.set(xlim=lims, ylim=lims, aspect="equal", xlabel=f"measured {side} SBR",
               ylabel=f"predicted {side} SBR", title=f"{side}: r = {r:.3f}, MAE = {mae:.3f} SBR")  # fmt: skip
        ax.grid(alpha=0.3)
    return fig


def bland_altman(truth: np.ndarray, pred: np.ndarray, label: str = "") -> Figure:
    """Bland-Altman per side: difference (predicted - measured) vs mean of the two, bias and 95 % limits."""
    fig = _figure(11.0, 5.0, f"Bland-Altman plots, {label}: solid line = mean difference (bias), dashed = bias "
                             "± 1.96 SD (95 % limits of agreement).")  # fmt: skip
    diff_all = pred - truth
    span = float(np.max(np.abs(diff_all))) * 1.15 or 1.0
    for i, side in enumerate(SIDES):
        ax = fig.add_axes((0.07 + 0.49 * i, 0.16, 0.41, 0.74))
        mean, diff = (pred[:, i] + truth[:, i]) / 2, diff_all[:, i]
        bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        ax.scatter(mean, diff, s=16, color=COLOURS[side])
        ax.axhline(bias, color="black", lw=1.2, label=f"bias {bias:+.3f}")
        for sign in (-1, 1):
            ax.axhline(bias + sign * 1.96 * sd, color="black", ls="--", lw=1,
                       label="bias ± 1.96 SD" if sign > 0 else None)  # fmt: skip
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(ylim=(-span, span), xlabel=f"mean of predicted and measured {side} SBR",
               ylabel=f"predicted - measured {side} SBR",
               title=f"{side}: limits {bias - 1.96 * sd:+.2f} to {bias + 1.96 * sd:+.2f} SBR")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    return fig


def sharpness_cp_figure(
    curves: Mapping[str, Sequence[SharpnessCPCurve]], label: str = "", notes: Mapping[str, str] | None = None
) -> Figure:
    """Fig. 4: sharpness-CP curves per side for each interval mode, optimal and 95 % CP points marked.

    ``notes`` adds a legend remark per mode (e.g. the gammas of symmetric MC). Plain MC is drawn dashed on top, so
    that it stays visible where the two coincide (gamma = 0)."""
    fig = _figure(11.0, 5.5, f"Sharpness-CP curves of the intervals mean ± k·σ, k from 0 until CP = 1 ({label}); "
                             f"sharpness = 1 − mean width / {_range(curves):g} SBR.\nCircle: optimal point "
                             "(closest to (1, 1)); square: narrowest interval with CP ≥ 0.95.")  # fmt: skip
    for i, side in enumerate(SIDES):
        ax = fig.add_axes((0.07 + 0.49 * i, 0.19, 0.41, 0.72))
        for mode, side_curves in curves.items():
            curve = side_curves[i]
            colour = COLOURS.get(mode, None)
            note = f", {notes[mode]}" if notes and mode in notes else ""
            style = {"ls": "--", "zorder": 3} if mode == "mc" else {"lw": 2.4, "zorder": 2}
            ax.plot(curve.cp, curve.sharpness, color=colour, label=f"{MODE_NAMES.get(mode, mode)} "
                    f"(AUC {curve.auc:.3f}{note})", **{"lw": 1.6, **style})  # fmt: skip
            ax.plot(curve.cp[curve.optimal], curve.sharpness[curve.optimal], "o", color=colour, ms=7, mfc="none", mew=2)
            ax.plot(curve.cp[curve.at_target], curve.sharpness[curve.at_target], "s", color=colour, ms=6)
        ax.axvline(0.95, color="tab:red", ls=":", lw=1, label="CP = 0.95")
        ax.set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="coverage probability (CP)",
               ylabel="sharpness (1 - normalised width)", title=f"{side} SBR intervals")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    return fig


def _range(curves: Mapping[str, Sequence[SharpnessCPCurve]]) -> float:
    """The width normalisation (sbr_max) the curves were computed with."""
    return next(iter(curves.values()))[0].value_range


def residual_histogram(truth: np.ndarray, pred: np.ndarray, label: str = "") -> Figure:
    """Histogram of the residuals (predicted - measured) of both sides, SBR units."""
    residual = pred - truth
    fig = _figure(7.5, 5.0, f"Residuals (predicted - measured SBR) per side, {label}.")
    ax = fig.add_axes((0.11, 0.18, 0.85, 0.72))
    edges = np.histogram_bin_edges(residual[np.isfinite(residual)], bins="auto")
    for i, side in enumerate(SIDES):
        values = residual[:, i]
        ax.hist(values, bins=edges, alpha=0.35, color=COLOURS[side], histtype="stepfilled")
        ax.hist(values, bins=edges, color=COLOURS[side], histtype="step", lw=2,
                label=f"{side}: mean {values.mean():+.3f}, SD {values.std(ddof=1):.3f} SBR")  # fmt: skip
    ax.axvline(0, color="black", lw=1)
    ax.set(xlabel="residual, predicted - measured (SBR)", ylabel="patients", title="Residual distribution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
