"""Transforms of the localiser's data: the annotated centroids in scanner space, and their Gaussian heat maps.

:class:`WorldCentroidsd` runs right after loading (it needs the file's own affine); :class:`CentroidHeatmapsd` runs
after MONAI's orientation, spacing and padding transforms and draws the targets on the final grid, so every spatial
transform in between is accounted for by the image's affine. Written by hand: MONAI has no landmark heat-map
transform for 3D.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    MapTransform,
    Orientationd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transform,
)

from bundle.constants import SIDES
from bundle.data.loading import LoadVolumed
from bundle.data.patches import case_id, world_centroid

__all__ = [
    "gaussian_heatmaps",
    "voxel_to_world",
    "world_to_voxel",
    "WorldCentroidsd",
    "CentroidHeatmapsd",
    "localiser_loading",
]


def gaussian_heatmaps(shape: Sequence[int], points: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """One Gaussian heat map per point: ``exp(-|(x - p) / sigma|^2 / 2)``, peak 1 at ``p`` (voxel coordinates,
    fractional allowed). ``points`` [K, 3]; returns float32 [K, *shape]."""
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    sigma = np.asarray(sigma_vox, dtype=np.float32)
    maps = np.empty((len(points), *shape), dtype=np.float32)
    for k, point in enumerate(np.asarray(points, dtype=np.float32)):
        squared = sum(((g - p) / s) ** 2 for g, p, s in zip(grid, point, sigma, strict=True))
        maps[k] = np.exp(-0.5 * squared)
    return maps


def voxel_to_world(affine: np.ndarray | torch.Tensor, points: np.ndarray) -> np.ndarray:
    """Scanner-space points [K, 3] of voxel coordinates [K, 3] (fractional allowed) under a 4x4 ``affine``."""
    return _apply(_as_matrix(affine), points)


def world_to_voxel(affine: np.ndarray | torch.Tensor, points: np.ndarray) -> np.ndarray:
    """Voxel coordinates [K, 3] of scanner-space points [K, 3] under a 4x4 voxel-to-world ``affine``."""
    return _apply(np.linalg.inv(_as_matrix(affine)), points)


def _as_matrix(affine: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))]
    return (matrix @ homogeneous.T).T[:, :3]


class WorldCentroidsd(MapTransform):
    """Add ``centroids_world`` [2, 3] (right, left; scanner RAS mm) from the case's ``centroid_right`` /
    ``centroid_left`` in ``centroid_space`` (``voxel``: indices of the file's array; ``world``), read against the
    loaded ``image``'s own affine. Cases without centroids get NaNs (inference on unannotated volumes)."""

    def __init__(self, keys: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.first_key(d)]
        space = d.get("centroid_space", "voxel")
        points = np.full((2, 3), np.nan)
        if space != "auto" and all(d.get(f"centroid_{side}") is not None for side in SIDES):
            for k, side in enumerate(SIDES):
                try:
                    points[k] = world_centroid(image, d[f"centroid_{side}"], space)
                except ValueError as err:
                    raise ValueError(f"{case_id(d)}: centroid_{side}: {err}") from None
        d["centroids_world"] = points
        return d


class CentroidHeatmapsd(MapTransform):
    """Add ``label`` [2, *spatial]: Gaussian heat maps (peak 1, SD ``sigma_mm``) at ``centroids_world`` on the grid
    of ``image`` as it is now (its affine after reorientation, resampling and padding)."""

    def __init__(self, sigma_mm: float = 2.0, keys: str = "image", label_key: str = "label") -> None:
        super().__init__(keys)
        self.sigma_mm = float(sigma_mm)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.first_key(d)]
        if not isinstance(image, MetaTensor):
            raise TypeError("CentroidHeatmapsd needs the image as a MetaTensor (its affine)")
        points = np.asarray(d["centroids_world"], dtype=np.float64)
        if not np.isfinite(points).all():
            raise ValueError(f"{case_id(d)}: centroids: training the localiser needs both centroids")
        affine = image.affine
        spacing = np.linalg.norm(np.asarray(affine[:3, :3], dtype=np.float64), axis=0)
        maps = gaussian_heatmaps(image.shape[1:], world_to_voxel(affine, points), self.sigma_mm / spacing)
        d[self.label_key] = MetaTensor(torch.from_numpy(maps), meta={**image.meta, "affine": affine.clone()})
        return d


def localiser_loading(spacing: Sequence[float], dicom_reader: Literal["itk", "pydicom"] = "itk") -> list[Transform]:
    """The localiser's deterministic preprocessing, shared by its training, the ``localise`` workflow and automatic
    centroids in inference: load (NIfTI, or a DICOM series folder read by ``dicom_reader``, with the regressor's
    readers and checks), annotated centroids to scanner space, RAS orientation, ``spacing`` (mm, bilinear),
    intensities to [0, 1] between the 1st and 99th percentile."""
    return [
        LoadVolumed(keys="image", dicom_reader=dicom_reader),
        WorldCentroidsd(keys="image"),
        Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys="image", pixdim=[float(s) for s in spacing], mode="bilinear"),
        ScaleIntensityRangePercentilesd(keys="image", lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True),
    ]
