"""Per-patient PNG report: the network's input patches and the predicted SBR intervals against the thresholds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bundle.constants import ABNORMAL_SBR, TARGET_SPACING
from bundle.evaluation.plots import save_png

__all__ = ["INTENSITY_RANGE", "patient_report"]


INTENSITY_RANGE = (0.3, 1.7)
"""Grey-scale window of the patch panels, in units of the patch mean (the network's input scale)."""


def _interval_text(record: Mapping[str, Any], side: str) -> str:
    """One side as the report prints it: ``right  SBR 1.79  [1.18, 2.40]  abnormal (abnormal below 3.40)``."""
    threshold = ABNORMAL_SBR[side]
    low, high = record.get(f"low_{side}"), record.get(f"high_{side}")
    interval = f"  [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    status = "abnormal" if record[f"sbr_{side}"] < threshold else "normal"
    return f"{side:<5}  SBR {record[f'sbr_{side}']:.2f}{interval}  {status} (abnormal below {threshold:.2f})"


def _interval_label(record: Mapping[str, Any]) -> str:
    intervals = record.get("intervals") or {}
    kind = intervals.get("kind", "none")
    coverage = intervals.get("coverage")
    if kind == "calibrated" and coverage:
        return f"calibrated {coverage:.0%} intervals"
    return "UNCALIBRATED intervals (+-1.96 sigma, no coverage guarantee)" if kind == "uncalibrated" else "no intervals"


def _patch_panel(ax: Any, image: np.ndarray, title: str, mirrored: bool) -> Any:
    """One axial slice of a RAS array in neurological convention (subject's right on the right, anterior up), with
    orientation letters on the edges (swapped left-right for the mirrored patch)."""
    shown = ax.imshow(image.T, origin="lower", cmap="gray", vmin=INTENSITY_RANGE[0], vmax=INTENSITY_RANGE[1])
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    edges = {"left": "R" if mirrored else "L", "right": "L" if mirrored else "R"}
    style = {"transform": ax.transAxes, "color": "yellow", "fontsize": 10, "fontweight": "bold"}
    ax.text(0.03, 0.5, edges["left"], ha="left", va="center", **style)
    ax.text(0.97, 0.5, edges["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.97, "A", ha="center", va="top", **style)
    ax.text(0.5, 0.03, "P", ha="center", va="bottom", **style)
    return shown


def patient_report(pair: np.ndarray, record: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write one patient's report: the centre axial slice of both input patches (orientation, slice and intensity
    scale shown), the predicted SBRs with their intervals against the measured values and the abnormality
    thresholds, and the same numbers as text.

    Args:
        pair: network input [2, X, Y, Z] = (mirrored right patch, left patch), RAS, divided by the patch mean.
        record: the patient's prediction (``predictions.csv`` row plus ``true_sbr_*`` and ``intervals``), SBR units.
        path: PNG file to write (atomically).
    """
    z = pair.shape[-1] // 2
    right_mirrored, left = pair[0, :, :, z], pair[1, :, :, z]
    fig = Figure(figsize=(13, 5.0), dpi=90, layout="constrained")
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 1.5], height_ratios=[1, 0.26])
    panels = (
        (right_mirrored, "right, mirrored (network input)", True),
        (right_mirrored[::-1], "right, as in the subject", False),
        (left, "left (network input)", False),
    )
    axes = [fig.add_subplot(grid[0, i]) for i in range(3)]
    for ax, (image, title, mirrored) in zip(axes, panels, strict=True):
        shown = _patch_panel(ax, image, title, mirrored)
    spacing = " x ".join(f"{s:g}" for s in TARGET_SPACING)
    axes[1].set_xlabel(
        f"axial slice {z + 1} of {pair.shape[-1]} (through the nigrosome-1 centroid), {spacing} mm voxels", fontsize=8
    )
    fig.colorbar(shown, ax=axes, location="left", shrink=0.8, pad=0.01, label="intensity / patch mean")

    ax = fig.add_subplot(grid[0, 3])
    for y, side in ((1, "right"), (0, "left")):
        sbr = record[f"sbr_{side}"]
        low, high = record.get(f"low_{side}"), record.get(f"high_{side}")
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color="tab:blue", lw=7, alpha=0.35, solid_capstyle="butt",
                    label="interval" if y else None)  # fmt: skip
        truth = record.get(f"true_sbr_{side}")
        if truth is not None:
            ax.plot(truth, y, "s", mfc="none", mec="black", ms=13, mew=1.8, label="measured" if y else None, zorder=3)
        ax.plot(sbr, y, "D", color="tab:blue", mec="white", ms=7, label="predicted" if y else None, zorder=4)
        ax.annotate(f"{sbr:.2f}", (sbr, y), xytext=(0, 11), textcoords="offset points", ha="center", fontsize=8)
        threshold = ABNORMAL_SBR[side]
        ax.plot([threshold] * 2, [y - 0.3, y + 0.3], "--", color="tab:red", label="abnormal below" if y else None)
        ax.annotate(f"{threshold:.2f}", (threshold, y - 0.3), xytext=(0, -9), textcoords="offset points",
                    ha="center", fontsize=7, color="tab:red")  # fmt: skip
    ax.set_yticks([0, 1], ["left", "right"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlim(0, 7)
    ax.set_xlabel("striatal SBR")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)  # off the data
    label = _interval_label(record)
    ax.set_title(f"predicted SBR, {label}", fontsize=9, color="tab:red" if "UNCALIBRATED" in label else "black")

    text = fig.add_subplot(grid[1, :])
    text.axis("off")
    lines = [_interval_text(record, side) for side in ("right", "left")]
    if record.get("true_sbr_right") is not None and record.get("true_sbr_left") is not None:
        lines.append(f"measured  SBR right {record['true_sbr_right']:.2f}, left {record['true_sbr_left']:.2f}")
    lines.append(f"{label}; MC dropout samples: {record.get('mc_samples', 0)}")
    text.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=9, va="top", ha="left")
    fig.suptitle(f"Patient {record['id']} - research use only, not for clinical decisions", fontsize=10)
    save_png(fig, path, dpi=90)
