"""The per-case PNG panel: each method's map over both patches in three planes through the centroid."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from bundle.constants import TARGET_SPACING
from bundle.io import atomic_open

__all__ = ["PLANES", "plane", "explanation_panel"]

PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))
"""Plane name and the array axis it cuts (RAS order: x toward the subject's right, y anterior, z superior)."""


def _aspect(axis: int) -> float:
    """Height / width of one pixel in the plane cutting ``axis`` (the patch grid's voxel size)."""
    shown = [a for a in range(3) if a != axis]
    return TARGET_SPACING[shown[1]] / TARGET_SPACING[shown[0]]


def plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice ``index`` across ``axis`` of a RAS-ordered volume, transposed for ``imshow(origin="lower")``: rows
    are the second remaining axis."""
    return np.take(volume, index, axis=axis).T


def explanation_panel(
    patches: Mapping[str, np.ndarray],
    maps: Mapping[str, Mapping[str, np.ndarray]],
    centre: tuple[int, int, int],
    title: str,
    path: str | os.PathLike,
) -> None:
    """Write the panel: one row per method, per side (right as in the subject, left) the axial, coronal and sagittal
    planes through ``centre`` (RAS array order), the map (symmetric colour range, its own colour bar per row) over the
    patch in grey."""
    methods = list(maps)
    fig = Figure(figsize=(15, 2.6 * len(methods) + 0.6), dpi=80, layout="constrained")
    axes = fig.subplots(len(methods), 6, squeeze=False)
    for row, method in enumerate(methods):
        limit = max(float(np.abs(maps[method][side]).max()) for side in patches) or 1.0
        signed = any(float(maps[method][side].min()) < 0 for side in patches)
        shown = None
        for s, side in enumerate(("right", "left")):
            for p, (plane_name, axis) in enumerate(PLANES):
                ax = axes[row, 3 * s + p]
                ax.imshow(plane(patches[side], axis, centre[axis]), cmap="gray", origin="lower", aspect=_aspect(axis))
                shown = ax.imshow(
                    plane(maps[method][side], axis, centre[axis]), cmap="RdBu_r" if signed else "inferno",
                    vmin=-limit if signed else 0.0, vmax=limit, alpha=0.55, origin="lower", aspect=_aspect(axis),
                )  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{side} {plane_name}", fontsize=9)
                if s == 0 and p == 0:
                    ax.set_ylabel(method, fontsize=10)
        fig.colorbar(shown, ax=axes[row, :].tolist(), shrink=0.85, pad=0.01)
    fig.suptitle(title, fontsize=10)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
