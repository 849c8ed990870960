"""Crop the mirrored nigral patch pair out of one loaded SMWI volume (:class:`ExtractNigralPatchesd`).

Reorients to RAS (so the left-right axis and its direction come from the affine, whatever the storage order),
turns each centroid (``voxel`` or ``world``) into scanner millimetres, optionally resamples the neighbourhood to
0.5 x 0.5 x 1 mm, crops centred on each centroid and mirrors the right patch. Every bad input raises a one-line
``ValueError`` starting with ``"{case_id}: {field}: "``. Conventions and the table of messages: ``docs/data.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import BorderPad, Flip, MapTransform, Orientation, SpatialCrop, SpatialResample

from bundle.constants import PATCH_SIZE, SIDES, TARGET_SPACING

__all__ = ["ExtractNigralPatchesd", "LR_AXIS"]

LR_AXIS = 0
"""Spatial axis of the left-right direction once the image is in RAS orientation (+x = subject's right)."""

logger = logging.getLogger(__name__)


def case_id(data: Mapping[Hashable, Any]) -> str:
    """The case's id for messages (``<no id>`` when it has none)."""
    return str(data.get("id", "<no id>"))


def world_centroid(image: MetaTensor, centroid: Sequence[float], space: str) -> np.ndarray:
    """Scanner RAS mm of a ``voxel`` (index into the file's array) or ``world`` centroid."""
    point = np.asarray(centroid, dtype=np.float64)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ValueError(f"centroid must be 3 finite numbers, got {centroid!r}")
    if space == "voxel":
        original = np.asarray(image.meta.get("original_affine", image.affine), dtype=np.float64)
        return (original @ np.append(point, 1.0))[:3]
    if space != "world":
        raise ValueError(f"centroid_space must be 'voxel' or 'world', got {space!r}")
    return point


def format_numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def spacing_differs(spacing: np.ndarray, target: Sequence[float], tolerance: float) -> bool:
    return bool(np.any(np.abs(spacing / np.asarray(target, dtype=np.float64) - 1.0) > tolerance))


def check_obliquity(case: str, field: str, affine: np.ndarray, max_deg: float) -> None:
    """The RAS-reoriented array's left-right axis must be within ``max_deg`` of the scanner's left-right axis."""
    axis = affine[:3, LR_AXIS] / np.linalg.norm(affine[:3, LR_AXIS])
    angle = float(np.degrees(np.arccos(min(1.0, abs(axis[0])))))
    if angle > max_deg:
        raise ValueError(
            f"{case}: {field}: the array's left-right axis is {angle:.0f} deg oblique to the scanner's "
            f"(more than {max_deg:g} deg); cannot tell left from right reliably"
        )


def check_patch(case: str, field: str, name: str, patch: torch.Tensor, core: tuple[slice, ...]) -> None:
    """No NaN/Inf voxels, and a mean (over the ``core`` patch, without margin) that can be divided by."""
    bad = int((~torch.isfinite(patch)).sum())
    if bad:
        raise ValueError(f"{case}: {field}: {bad} NaN/Inf voxels in {name}")
    mean = float(patch[(slice(None), *core)].double().mean())
    if abs(mean) < 1e-6:
        raise ValueError(f"{case}: {field}: {name} has mean intensity {mean:g}; cannot normalise by it (empty patch?)")


def margins_of(margin: Sequence[int] | int) -> np.ndarray:
    return np.array([int(margin)] * 3 if isinstance(margin, int) else [int(m) for m in margin])


class ExtractNigralPatchesd(MapTransform):
    """Crop the right and left nigral patches of one loaded volume, mirroring the right one ("identical input type").

    The image (channel-first 3D ``MetaTensor``, any storage order) is reoriented to RAS, so that the left-right
    axis and its direction come from the affine (RAS, LPS, LAS, permuted axes, oblique up to ``max_obliquity``
    degrees all give the same patches). Each patch has size ``patch_size + 2 * margin`` (the margin leaves room
    for a random jitter crop later).

    Centring convention (even sizes): the centroid lands at index ``size // 2`` of the *final* patch on every
    axis, for both sides - the right patch is cropped one voxel further to the subject's left along the
    left-right axis so that after mirroring its centroid sits exactly where the left patch's does. At the
    native resolution the centroid is rounded to the nearest voxel and voxels are copied unchanged.

    Spacing: if a voxel dimension differs from ``target_spacing`` by more than ``spacing_tolerance`` (relative)
    and ``resample`` is on, each patch is resampled (bilinear, MONAI ``SpatialResample`` - the resampler behind
    ``Spacing``) on a ``target_spacing`` grid along the image's axes whose voxel ``size // 2`` lies exactly on
    the centroid; this is logged once per case.

    Checks (one-line ``ValueError``): centroid outside the volume; more than ``max_outside`` of a patch (without
    margin) outside the volume (less is zero-padded, with one warning per case); right centroid not to the
    subject's right of the left one in scanner coordinates (likely swapped); NaN/Inf voxels or a zero mean in a
    patch; an array left-right axis more than ``max_obliquity`` degrees from the scanner's.

    Args:
        keys: the image key (one key).
        centroid_keys: keys of the right and left centroids.
        space_key: key holding ``"voxel"`` or ``"world"`` (missing means ``"voxel"``).
        output_keys: keys for the (mirrored right, left) patches.
        patch_size: final patch size in voxels.
        margin: extra voxels per side and axis (e.g. 2 for a +-2 voxel centroid jitter).
        mirror_right: mirror the right patch along the left-right axis (the paper's formulation).
        resample: resample when the voxel size is off ``target_spacing``; if off, crop at native resolution.
        target_spacing: the network's voxel size (mm) along the RAS axes.
        spacing_tolerance: relative voxel size difference tolerated without resampling.
        max_outside: largest fraction of a patch that may lie outside the volume.
        max_obliquity: largest angle (degrees) between the array's and the scanner's left-right axes.
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
        resample: bool = True,
        target_spacing: Sequence[float] = TARGET_SPACING,
        spacing_tolerance: float = 0.05,
        max_outside: float = 0.5,
        max_obliquity: float = 30.0,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"ExtractNigralPatchesd takes exactly one image key, got {self.keys}.")
        self.centroid_keys = tuple(centroid_keys)
        self.space_key = space_key
        self.output_keys = tuple(output_keys)
        patch = np.array([int(s) for s in patch_size])
        margins = margins_of(margin)
        self.size = patch + 2 * margins
        self.center = patch // 2 + margins
        self.core = tuple(slice(int(m), int(m + p)) for m, p in zip(margins, patch, strict=True))
        self.mirror_right = mirror_right
        self.resample = resample
        self.target_spacing = np.asarray(target_spacing, dtype=np.float64)
        self.spacing_tolerance = float(spacing_tolerance)
        self.max_outside = float(max_outside)
        self.max_obliquity = float(max_obliquity)
        self.orient = Orientation(axcodes="RAS", labels=None)
        self.flip = Flip(spatial_axis=LR_AXIS)
        self.resampler = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float64)
        core_grid = np.meshgrid(*[np.arange(s.start, s.stop) for s in self.core], indexing="ij")
        self._core_points = np.stack([g.ravel() for g in core_grid] + [np.ones(core_grid[0].size)])

    def _crop(self, image: MetaTensor, start: np.ndarray) -> MetaTensor:
        shape = np.array(image.shape[1:])
        end = start + self.size
        lo, hi = np.clip(start, 0, shape), np.clip(end, 0, shape)
        if np.any(hi <= lo):
            raise ValueError(f"patch at voxel start {start.tolist()} lies entirely outside the volume {shape.tolist()}")
        patch = SpatialCrop(roi_start=lo, roi_end=hi)(image)
        border = np.stack([lo - start, end - hi], axis=1).ravel().tolist()
        return BorderPad(spatial_border=border, mode="constant")(patch) if any(border) else patch

    def _outside_fraction(self, to_index: np.ndarray, shape: np.ndarray) -> float:
        """Fraction of the core patch's voxel centres outside the volume, given patch index -> volume index."""
        index = (to_index @ self._core_points)[:3]
        inside = np.all((index >= -0.5 - 1e-6) & (index <= shape[:, None] - 0.5 + 1e-6), axis=0)
        return float(1.0 - inside.mean())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        image = d[key]
        case = case_id(d)
        if not isinstance(image, MetaTensor) or image.ndim != 4:
            raise ValueError(f"{case}: {key}: must be a channel-first 3D MetaTensor, got shape {tuple(image.shape)}")
        image = self.orient(image)
        affine = np.asarray(image.affine, dtype=np.float64)
        to_index = np.linalg.inv(affine)
        shape = np.array(image.shape[1:])
        check_obliquity(case, key, affine, self.max_obliquity)
        space = str(d.get(self.space_key, "voxel"))
        worlds = []
        for ckey in self.centroid_keys:
            if d.get(ckey) is None:
                raise ValueError(f"{case}: {ckey}: missing")
            try:
                world = world_centroid(image, d[ckey], space)
            except ValueError as err:
                raise ValueError(f"{case}: {ckey}: {err}") from None
            index = (to_index @ np.append(world, 1.0))[:3]
            if np.any(index < -0.5) or np.any(index > shape - 0.5):
                raise ValueError(
                    f"{case}: {ckey}: {format_numbers(d[ckey])} ({space}) lies outside the volume "
                    f"(array index {format_numbers(np.round(index, 1))}, shape {shape.tolist()})"
                )
            worlds.append(world)
        self._check_laterality(case, *worlds)

        spacing = spacing_of(affine)
        off_spacing = spacing_differs(spacing, self.target_spacing, self.spacing_tolerance)
        resample = self.resample and off_spacing
        if off_spacing:
            action = "resampled around each centroid (bilinear)" if resample else "NOT resampled (resample=False)"
            logger.warning(
                "%s: %s: voxel size %s mm differs from %s mm by more than %g %%; %s",
                case, key, format_numbers(np.round(spacing, 3)), format_numbers(self.target_spacing),
                100 * self.spacing_tolerance, action,
            )  # fmt: skip
        padded = []
        for side, ckey, okey, world in zip(SIDES, self.centroid_keys, self.output_keys, worlds, strict=True):
            mirror = side == "right" and self.mirror_right
            anchor = self.center.copy()  # where the centroid goes in the (not yet mirrored) patch
            if mirror:
                anchor[LR_AXIS] = self.size[LR_AXIS] - 1 - self.center[LR_AXIS]
            if resample:  # a target-spacing grid along the image's axes, voxel `anchor` exactly on the centroid
                grid = np.eye(4)
                grid[:3, :3] = affine[:3, :3] / spacing * self.target_spacing
                grid[:3, 3] = world - grid[:3, :3] @ anchor
            else:  # the native grid, shifted by whole voxels to the rounded centroid
                start = np.rint((to_index @ np.append(world, 1.0))[:3]).astype(int) - anchor
                grid = affine.copy()
                grid[:3, 3] = (affine @ np.append(start, 1.0))[:3]
            outside = self._outside_fraction(to_index @ grid, shape)
            if outside > self.max_outside:
                raise ValueError(
                    f"{case}: {ckey}: {outside:.0%} of the {side} patch lies outside the volume "
                    f"(more than {self.max_outside:.0%}); check the centroid"
                )
            if outside > 0:
                padded.append(f"{ckey}: {outside:.0%} of the {side} patch outside the volume, zero-padded")
            if resample:
                patch = self.resampler(image, dst_affine=torch.as_tensor(grid), spatial_size=self.size.tolist())
                patch = patch.to(torch.float32)
            else:
                patch = self._crop(image, start)
            patch = self.flip(patch) if mirror else patch
            check_patch(case, key, f"the {side} patch", patch, self.core)
            d[okey] = patch
        if padded:
            logger.warning("%s: %s", case, "; ".join(padded))
        return d

    @staticmethod
    def _check_laterality(case: str, right: np.ndarray, left: np.ndarray) -> None:
        """The right centroid must lie to the subject's right (+x in scanner RAS) of the left one."""
        if np.allclose(right, left):
            raise ValueError(
                f"{case}: centroid_left: identical to centroid_right ({format_numbers(np.round(right, 2))} mm)"
            )
        if right[0] <= left[0]:
            raise ValueError(
                f"{case}: centroid_right: lies {left[0] - right[0]:.1f} mm to the subject's left of centroid_left "
                f"(scanner RAS x {right[0]:.1f} vs {left[0]:.1f} mm); right and left are likely swapped"
            )
