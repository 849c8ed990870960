"""PNG panels of the DaT bundles: template-space maps over the mean volume in three planes through the striatum."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from bundle.explain.figures import PLANES, plane
from bundle.io import atomic_open

__all__ = ["template_panel"]


def template_panel(background: np.ndarray, maps: Mapping[str, np.ndarray], centre: tuple[int, int, int], title: str,
                   path: str | os.PathLike, contour: np.ndarray | None = None) -> None:  # fmt: skip
    """One row per map (signed maps in a symmetric blue-red range, others in inferno; a colour bar each) over the grey
    ``background``, in the axial, coronal and sagittal planes through ``centre`` (voxel, RAS array order; the
    subject's left is on the image's left, the neurological convention); ``contour`` (bool) is outlined in
    every row."""
    fig = Figure(figsize=(10, 2.9 * len(maps) + 0.5), dpi=80, layout="constrained")
    axes = fig.subplots(len(maps), 3, squeeze=False)
    for row, (name, volume) in enumerate(maps.items()):
        signed = float(volume.min()) < 0
        limit = float(np.abs(volume).max()) or 1.0
        shown = None
        for column, (plane_name, axis) in enumerate(PLANES):
            ax = axes[row, column]
            ax.imshow(plane(background, axis, centre[axis]), cmap="gray", origin="lower")
            shown = ax.imshow(plane(volume, axis, centre[axis]), cmap="RdBu_r" if signed else "inferno",
                              vmin=-limit if signed else 0.0, vmax=limit, alpha=0.6, origin="lower")  # fmt: skip
            if contour is not None:
                ax.contour(plane(contour.astype(float), axis, centre[axis]), levels=[0.5], colors="lime",
                           linewidths=0.8)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {plane_name}", fontsize=9)
        fig.colorbar(shown, ax=axes[row, :].tolist(), shrink=0.85, pad=0.01)
    fig.suptitle(title, fontsize=10)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
