"""Per-patient PNG report: the network's input patches and the predicted SBR intervals against the thresholds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bundle.constants import ABNORMAL_SBR
from bundle.evaluation.plots import save_png

__all__ = ["patient_report"]


def patient_report(pair: np.ndarray, record: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write one patient's report.

    Args:
        pair: network input [2, X, Y, Z] = (mirrored right patch, left patch), RAS, divided by the patch mean.
        record: the patient's prediction (``predictions.csv`` row plus ``true_sbr_*``), SBR units.
        path: PNG file to write (atomically).
    """
    z = pair.shape[-1] // 2
    right_mirrored, left = pair[0, :, :, z], pair[1, :, :, z]
    panels = (
        (right_mirrored, "right, mirrored (network input)"),
        (right_mirrored[::-1], "right, as in the subject"),
        (left, "left (network input)"),
    )
    fig = Figure(figsize=(11, 4.2), dpi=90, layout="constrained")
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 1.35])
    for i, (image, title) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image.T, origin="lower", cmap="gray", vmin=0.3, vmax=1.7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[0, 3])
    for y, side in ((1, "right"), (0, "left")):
        sbr = record[f"sbr_{side}"]
        low, high = record.get(f"low_{side}"), record.get(f"high_{side}")
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color="tab:blue", lw=6, alpha=0.45, solid_capstyle="butt")
        ax.plot(sbr, y, "o", color="tab:blue", label="predicted (interval)" if y else None)
        truth = record.get(f"true_sbr_{side}")
        if truth is not None:
            ax.plot(truth, y, "x", color="black", ms=9, mew=2, label="measured" if y else None)
        ax.plot([ABNORMAL_SBR[side]] * 2, [y - 0.3, y + 0.3], "--", color="tab:red",
                label="abnormal below" if y else None)  # fmt: skip
    ax.set_yticks([0, 1], ["left", "right"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlim(0, 7)
    ax.set_xlabel("striatal SBR")
    ax.legend(fontsize=8, loc="lower right")
    intervals = record.get("intervals") or {}
    kind = intervals.get("kind", "no")
    coverage = intervals.get("coverage")
    label = f"{kind} {coverage:.0%}" if kind == "calibrated" and coverage else kind
    colour = "tab:red" if kind == "uncalibrated" else "black"
    ax.set_title(f"predicted SBR with {label} interval", fontsize=9, color=colour)
    fig.suptitle(f"Patient {record['id']} - research use only, not for clinical decisions", fontsize=10)
    save_png(fig, path, dpi=90)
