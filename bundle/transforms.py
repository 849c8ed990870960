"""MONAI dictionary transforms that turn one patient into a mirrored, mean-normalised nigral patch pair.

Pipeline (see ``configs/train.json``): LoadImaged -> EnsureChannelFirstd -> Orientationd("RAS") ->
:class:`ExtractNigralPatchesd` (crop centred on each nigrosome centroid, right patch mirrored) -> [cache] ->
optional random jitter crop -> :class:`DivideByMeand` -> ConcatItemsd -> :class:`SBRTargetd`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import BorderPad, Flip, MapTransform, SpatialCrop

from bundle.networks import PATCH_SIZE

__all__ = ["ExtractNigralPatchesd", "DivideByMeand", "SBRTargetd", "centroid_to_index", "SIDES"]

SIDES: tuple[str, str] = ("right", "left")
LR_AXIS = 0
"""Spatial axis of the left-right direction once the image is in RAS orientation (+x = subject's right)."""


def _case(data: Mapping[Hashable, Any]) -> str:
    return str(data.get("id", "<no id>"))


def centroid_to_index(image: MetaTensor, centroid: Sequence[float], space: str) -> np.ndarray:
    """Array index (rounded to the nearest voxel) of a centroid in the *current* array of ``image``.

    ``space="voxel"`` means indices into the array as stored in the file (converted through the file's
    ``original_affine``, so reorientation after loading is accounted for); ``space="world"`` means scanner
    RAS millimetres, as in NIfTI.
    """
    point = np.asarray(centroid, dtype=np.float64)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ValueError(f"centroid must be 3 finite numbers, got {centroid!r}")
    if space == "voxel":
        original = np.asarray(image.meta.get("original_affine", image.affine), dtype=np.float64)
        point = (original @ np.append(point, 1.0))[:3]
    elif space != "world":
        raise ValueError(f"centroid_space must be 'voxel' or 'world', got {space!r}")
    current = np.asarray(image.affine, dtype=np.float64)
    index = np.linalg.solve(current, np.append(point, 1.0))[:3]
    return np.rint(index).astype(int)


class ExtractNigralPatchesd(MapTransform):
    """Crop the right and left nigral patches of one patient, mirroring the right one (the "identical input type").

    The image must be channel-first and in RAS orientation (``Orientationd(axcodes="RAS")``), so the left-right
    axis is spatial axis 0. Each patch has size ``patch_size + 2 * margin`` (the margin leaves room for a random
    jitter crop later) and is zero-padded where it extends beyond the volume.

    Centring convention (even sizes): the centroid voxel lands at index ``size // 2`` of the *final* patch on
    every axis, for both sides — the right patch is cropped one voxel further to the subject's left along the
    left-right axis so that after mirroring its centroid sits exactly where the left patch's does.

    Args:
        keys: the image key (one key).
        centroid_keys: keys of the right and left centroids.
        space_key: key holding ``"voxel"`` or ``"world"`` (missing means ``"voxel"``).
        output_keys: keys for the (mirrored right, left) patches.
        patch_size: final patch size in voxels.
        margin: extra voxels per side and axis (e.g. 2 for a +-2 voxel centroid jitter).
        mirror_right: mirror the right patch along the left-right axis (the paper's formulation).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        centroid_keys: Sequence[str] = ("centroid_right", "centroid_left"),
        space_key: str = "centroid_space",
        output_keys: Sequence[str] = ("patch_right", "patch_left"),
        patch_size: Sequence[int] = PATCH_SIZE,
        margin: Sequence[int] | int = 0,
        mirror_right: bool = True,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"ExtractNigralPatchesd takes exactly one image key, got {self.keys}.")
        self.centroid_keys = tuple(centroid_keys)
        self.space_key = space_key
        self.output_keys = tuple(output_keys)
        margins = [int(margin)] * 3 if isinstance(margin, int) else [int(m) for m in margin]
        self.size = np.array([int(s) + 2 * m for s, m in zip(patch_size, margins, strict=True)])
        self.center = np.array([int(s) // 2 + m for s, m in zip(patch_size, margins, strict=True)])
        self.mirror_right = mirror_right
        self.flip = Flip(spatial_axis=LR_AXIS)

    def _crop(self, image: MetaTensor, start: np.ndarray) -> MetaTensor:
        shape = np.array(image.shape[1:])
        end = start + self.size
        lo, hi = np.clip(start, 0, shape), np.clip(end, 0, shape)
        if np.any(hi <= lo):
            raise ValueError(f"patch at voxel start {start.tolist()} lies entirely outside the volume {shape.tolist()}")
        patch = SpatialCrop(roi_start=lo, roi_end=hi)(image)
        border = np.stack([lo - start, end - hi], axis=1).ravel().tolist()
        return BorderPad(spatial_border=border, mode="constant")(patch) if any(border) else patch

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        image = d[key]
        case = _case(d)
        if not isinstance(image, MetaTensor) or image.ndim != 4:
            raise ValueError(f"{case}: image must be a channel-first 3D MetaTensor, got shape {tuple(image.shape)}")
        space = str(d.get(self.space_key, "voxel"))
        for side, ckey, okey in zip(SIDES, self.centroid_keys, self.output_keys, strict=True):
            try:
                index = centroid_to_index(image, d[ckey], space)
                start = index - self.center
                if side == "right" and self.mirror_right:
                    start[LR_AXIS] = index[LR_AXIS] - (self.size[LR_AXIS] - 1 - self.center[LR_AXIS])
                patch = self._crop(image, start)
                d[okey] = self.flip(patch) if side == "right" and self.mirror_right else patch
            except KeyError as err:
                raise ValueError(f"{case}: missing field {err.args[0]!r}") from None
            except ValueError as err:
                raise ValueError(f"{case}: {ckey}: {err}") from None
        return d


class DivideByMeand(MapTransform):
    """Divide each patch by its own mean intensity (the paper's patch normalisation)."""

    def __init__(self, keys: KeysCollection, eps: float = 1e-6, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.eps = eps

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mean = float(d[key].float().mean())
            if not np.isfinite(mean) or abs(mean) < self.eps:
                raise ValueError(f"{_case(d)}: {key}: patch mean is {mean:g}, cannot normalise by it")
            d[key] = d[key] / mean
        return d


class SBRTargetd(MapTransform):
    """Build the target ``label = [sbr_right, sbr_left] / sbr_max`` (float32, shape [2]).

    Args:
        keys: the right and left SBR keys, in that order.
        sbr_max: normalisation constant (paper: 6.84, the cohort's maximum SBR).
        label_key: output key.
        allow_missing_keys: skip silently when both SBRs are absent (inference on unlabelled cases).
    """

    max_plausible_sbr = 20.0

    def __init__(
        self,
        keys: KeysCollection = ("sbr_right", "sbr_left"),
        sbr_max: float = 6.84,
        label_key: str = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"SBRTargetd needs the right and left SBR keys, got {self.keys}.")
        if sbr_max <= 0:
            raise ValueError(f"sbr_max must be positive, got {sbr_max}.")
        self.sbr_max = float(sbr_max)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [k for k in self.keys if d.get(k) is not None]
        if not present and self.allow_missing_keys:
            return d
        values = []
        for key in self.keys:
            value = d.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{_case(d)}: {key} must be a number, got {value!r}")
            if not 0.0 <= value <= self.max_plausible_sbr or not np.isfinite(value):
                raise ValueError(
                    f"{_case(d)}: {key}={value} is outside the plausible SBR range [0, {self.max_plausible_sbr:g}]"
                )
            values.append(float(value) / self.sbr_max)
        d[self.label_key] = torch.tensor(values, dtype=torch.float32)
        return d
