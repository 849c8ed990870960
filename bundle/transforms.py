"""MONAI transforms that turn one patient (any datalist form) into a mirrored nigral patch pair, and its target.

:class:`LoadNigralPatchesd` is the single entry point of every workflow's deterministic preprocessing:

- full volume (``image``: NIfTI file or DICOM series folder, MONAI ``LoadImage`` with ``NibabelReader`` /
  ``ITKReader`` / ``PydicomReader``) -> :class:`ExtractNigralPatchesd`: reorient to RAS (so the left-right axis
  and its direction come from the affine, whatever the storage order), centroid (``voxel`` or ``world``) to an
  index, optional resampling of the neighbourhood to 0.5 x 0.5 x 1 mm, crop centred on each centroid, mirror the
  right patch;
- patch files (``patch_right``, ``patch_left``) -> reorient to RAS, mirror the right patch;
- MATLAB pair (``mat``, the original public release) -> arrays in stored order, mirror ``right_patch``.

Then (``configs/*.json``): optional random jitter crop -> :class:`DivideByMeand` -> ConcatItemsd ->
:class:`SBRTargetd`. Every bad input raises a one-line ``ValueError`` (``FileNotFoundError`` for a missing file)
starting with ``"{case_id}: {field}: "``; :func:`error_message` recovers it from MONAI's wrapped exceptions.
Conventions and the table of messages: ``docs/data.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader, PydicomReader
from monai.transforms import (
    BorderPad,
    Flip,
    LoadImage,
    MapTransform,
    Orientation,
    SpatialCrop,
    SpatialResample,
    Transform,
)
from nibabel import orientations as nio

from bundle.data.datalist import SBR_KEYS, SBR_RANGE, case_form, sbr_problem, validate_case
from bundle.data.readers import check_dicom_series, read_mat_pair
from bundle.networks import PATCH_SIZE

__all__ = [
    "LoadNigralPatchesd",
    "ExtractNigralPatchesd",
    "DivideByMeand",
    "SBRTargetd",
    "centroid_to_index",
    "error_message",
    "SIDES",
    "TARGET_SPACING",
    "MAT_SBR_MAX",
]

SIDES: tuple[str, str] = ("right", "left")
LR_AXIS = 0
"""Spatial axis of the left-right direction once the image is in RAS orientation (+x = subject's right)."""
TARGET_SPACING: tuple[float, float, float] = (0.5, 0.5, 1.0)
"""Voxel size (mm, RAS axes) of the network's input patches: the clinical SMWI protocol."""
MAT_SBR_MAX = 6.84
"""The original release stores ``true_sbr`` divided by this constant."""

logger = logging.getLogger(__name__)


def _case(data: Mapping[Hashable, Any]) -> str:
    return str(data.get("id", "<no id>"))


def error_message(exc: BaseException) -> str:
    """The one-line root cause of ``exc``, following ``__cause__`` through MONAI's ``RuntimeError`` wrappers.

    The bundle's own input errors come back verbatim (``"{case_id}: {field}: ..."``); anything else is prefixed
    with its exception type.
    """
    root, seen = exc, {id(exc)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    text = " ".join(str(root).split())
    ours = isinstance(root, ValueError) or (isinstance(root, FileNotFoundError) and root.errno is None)
    return text if ours and text else f"{type(root).__name__}: {text}".rstrip(": ")


def _world_centroid(image: MetaTensor, centroid: Sequence[float], space: str) -> np.ndarray:
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


def centroid_to_index(image: MetaTensor, centroid: Sequence[float], space: str) -> np.ndarray:
    """Array index (rounded to the nearest voxel) of a centroid in the *current* array of ``image``.

    ``space="voxel"`` means indices into the array as stored in the file (converted through the file's
    ``original_affine``, so reorientation after loading is accounted for); ``space="world"`` means scanner
    RAS millimetres, as in NIfTI.
    """
    world = _world_centroid(image, centroid, space)
    index = np.linalg.solve(np.asarray(image.affine, dtype=np.float64), np.append(world, 1.0))[:3]
    return np.rint(index).astype(int)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def _spacing_differs(spacing: np.ndarray, target: Sequence[float], tolerance: float) -> bool:
    return bool(np.any(np.abs(spacing / np.asarray(target, dtype=np.float64) - 1.0) > tolerance))


def _check_obliquity(case: str, field: str, affine: np.ndarray, max_deg: float) -> None:
    """The RAS-reoriented array's left-right axis must be within ``max_deg`` of the scanner's left-right axis."""
    axis = affine[:3, LR_AXIS] / np.linalg.norm(affine[:3, LR_AXIS])
    angle = float(np.degrees(np.arccos(min(1.0, abs(axis[0])))))
    if angle > max_deg:
        raise ValueError(
            f"{case}: {field}: the array's left-right axis is {angle:.0f} deg oblique to the scanner's "
            f"(more than {max_deg:g} deg); cannot tell left from right reliably"
        )


def _check_patch(case: str, field: str, name: str, patch: torch.Tensor, core: tuple[slice, ...]) -> None:
    """No NaN/Inf voxels, and a mean (over the ``core`` patch, without margin) that can be divided by."""
    bad = int((~torch.isfinite(patch)).sum())
    if bad:
        raise ValueError(f"{case}: {field}: {bad} NaN/Inf voxels in {name}")
    mean = float(patch[(slice(None), *core)].double().mean())
    if abs(mean) < 1e-6:
        raise ValueError(f"{case}: {field}: {name} has mean intensity {mean:g}; cannot normalise by it (empty patch?)")


def _margins(margin: Sequence[int] | int) -> np.ndarray:
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
        margins = _margins(margin)
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
        case = _case(d)
        if not isinstance(image, MetaTensor) or image.ndim != 4:
            raise ValueError(f"{case}: {key}: must be a channel-first 3D MetaTensor, got shape {tuple(image.shape)}")
        image = self.orient(image)
        affine = np.asarray(image.affine, dtype=np.float64)
        to_index = np.linalg.inv(affine)
        shape = np.array(image.shape[1:])
        _check_obliquity(case, key, affine, self.max_obliquity)
        space = str(d.get(self.space_key, "voxel"))
        worlds = []
        for ckey in self.centroid_keys:
            if d.get(ckey) is None:
                raise ValueError(f"{case}: {ckey}: missing")
            try:
                world = _world_centroid(image, d[ckey], space)
            except ValueError as err:
                raise ValueError(f"{case}: {ckey}: {err}") from None
            index = (to_index @ np.append(world, 1.0))[:3]
            if np.any(index < -0.5) or np.any(index > shape - 0.5):
                raise ValueError(
                    f"{case}: {ckey}: {_fmt(d[ckey])} ({space}) lies outside the volume "
                    f"(array index {_fmt(np.round(index, 1))}, shape {shape.tolist()})"
                )
            worlds.append(world)
        self._check_laterality(case, *worlds)

        spacing = _spacing(affine)
        off_spacing = _spacing_differs(spacing, self.target_spacing, self.spacing_tolerance)
        resample = self.resample and off_spacing
        if off_spacing:
            action = "resampled around each centroid (bilinear)" if resample else "NOT resampled (resample=False)"
            logger.warning(
                "%s: %s: voxel size %s mm differs from %s mm by more than %g %%; %s",
                case, key, _fmt(np.round(spacing, 3)), _fmt(self.target_spacing), 100 * self.spacing_tolerance, action,
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
            _check_patch(case, key, f"the {side} patch", patch, self.core)
            d[okey] = patch
        if padded:
            logger.warning("%s: %s", case, "; ".join(padded))
        return d

    @staticmethod
    def _check_laterality(case: str, right: np.ndarray, left: np.ndarray) -> None:
        """The right centroid must lie to the subject's right (+x in scanner RAS) of the left one."""
        if np.allclose(right, left):
            raise ValueError(f"{case}: centroid_left: identical to centroid_right ({_fmt(np.round(right, 2))} mm)")
        if right[0] <= left[0]:
            raise ValueError(
                f"{case}: centroid_right: lies {left[0] - right[0]:.1f} mm to the subject's left of centroid_left "
                f"(scanner RAS x {right[0]:.1f} vs {left[0]:.1f} mm); right and left are likely swapped"
            )


class LoadNigralPatchesd(Transform):
    """One datalist case -> the same dict plus ``patch_right`` (mirrored) and ``patch_left``, [1, *(size + 2 margin)].

    The single entry point of every workflow's deterministic preprocessing; it dispatches on the case form
    (``docs/data.md``) after :func:`bundle.data.datalist.validate_case`:

    - ``image`` (NIfTI file, or DICOM series folder checked by :func:`bundle.data.readers.check_dicom_series`
      and read by ``dicom_reader``): loaded with MONAI ``LoadImage`` and cropped by
      :class:`ExtractNigralPatchesd` (which holds the orientation, centring and spacing conventions); the
      volume is dropped so that caches hold only the patches.
    - ``patch_right`` / ``patch_left`` files (stored unmirrored, ``patch_size`` voxels): reoriented to RAS,
      right mirrored along the left-right axis; used at their stored resolution (a warning if it is off).
    - ``mat``: arrays in their stored order (or reoriented from ``mat_axcodes`` to RAS if given); the right one
      mirrored along ``mat_lr_axis``; ``true_sbr`` x 6.84 fills missing ``sbr_right`` / ``sbr_left``.
      A model trained on NIfTI-derived patches expects RAS order: store ``.mat`` arrays in RAS order (with
      ``mat_lr_axis=0``) or give ``mat_axcodes``.

    Pre-cropped patches (patch files, ``mat``) get their ``margin`` by edge replication.

    Args:
        patch_size: final patch size in voxels.
        margin: extra voxels per side and axis for a later random jitter crop.
        mirror_right: mirror the right patch (the paper's identical input type).
        resample: resample full volumes whose voxel size is off 0.5 x 0.5 x 1 mm by more than ``spacing_tolerance``.
        target_spacing: the network's voxel size (mm, RAS axes).
        spacing_tolerance: relative voxel size difference tolerated without resampling.
        dicom_reader: ``"itk"`` (``ITKReader``, slices sorted by position) or ``"pydicom"`` (``PydicomReader``,
            sorted by InstanceNumber, which must then follow the slice positions).
        mat_lr_axis: array axis of the left-right direction in ``.mat`` patches (1 in the original release).
        mat_axcodes: anatomical layout of the ``.mat`` arrays as nibabel axis codes (e.g. ``"PLS"``: rows to
            posterior, columns to the subject's left, slices to superior); ``None`` keeps the stored order.
        require_sbr: raise if a case (after reading ``true_sbr``) lacks an SBR - for labelled sections.
        max_outside: largest fraction of a patch that may lie outside the volume.
        max_obliquity: largest angle (degrees) between the array's and the scanner's left-right axes.
    """

    def __init__(
        self,
        patch_size: Sequence[int] = PATCH_SIZE,
        margin: Sequence[int] | int = 0,
        mirror_right: bool = True,
        *,
        resample: bool = True,
        target_spacing: Sequence[float] = TARGET_SPACING,
        spacing_tolerance: float = 0.05,
        dicom_reader: Literal["itk", "pydicom"] = "itk",
        mat_lr_axis: int = 1,
        mat_axcodes: str | None = None,
        require_sbr: bool = False,
        max_outside: float = 0.5,
        max_obliquity: float = 30.0,
    ) -> None:
        if dicom_reader not in ("itk", "pydicom"):
            raise ValueError(f"dicom_reader must be 'itk' or 'pydicom', got {dicom_reader!r}.")
        if mat_lr_axis not in (0, 1, 2):
            raise ValueError(f"mat_lr_axis must be 0, 1 or 2, got {mat_lr_axis!r}.")
        self.patch_size = tuple(int(s) for s in patch_size)
        self.margins = _margins(margin)
        self.core = tuple(slice(int(m), int(m + p)) for m, p in zip(self.margins, self.patch_size, strict=True))
        self.mirror_right = mirror_right
        self.target_spacing = np.asarray(target_spacing, dtype=np.float64)
        self.spacing_tolerance = float(spacing_tolerance)
        self.dicom_reader = dicom_reader
        self.mat_lr_axis = int(mat_lr_axis)
        self.mat_ornt = None
        if mat_axcodes is not None:
            self.mat_ornt = nio.ornt_transform(nio.axcodes2ornt(tuple(mat_axcodes)), nio.axcodes2ornt("RAS"))
        self.require_sbr = require_sbr
        self.max_obliquity = float(max_obliquity)
        self.orient = Orientation(axcodes="RAS", labels=None)
        self.flip = Flip(spatial_axis=LR_AXIS)
        self.pad = BorderPad(spatial_border=self.margins.tolist(), mode="edge")
        self.extract = ExtractNigralPatchesd(
            "image",
            patch_size=self.patch_size,
            margin=self.margins.tolist(),
            mirror_right=mirror_right,
            resample=resample,
            target_spacing=target_spacing,
            spacing_tolerance=spacing_tolerance,
            max_outside=max_outside,
            max_obliquity=max_obliquity,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        problems = validate_case(d, require_sbr=self.require_sbr)
        if problems:
            raise ValueError(problems[0])
        form = case_form(d)
        if form == "volume":
            d = self.extract(dict(d, image=self.load_volume(_case(d), "image", d["image"])))
            d.pop("image", None)
        elif form == "patches":
            d.update(self._from_patch_files(d))
        else:
            d.update(self._from_mat(d))
        return d

    def load_volume(self, case: str, field: str, path: str | Path) -> MetaTensor:
        """A channel-first 3D float32 ``MetaTensor`` from a NIfTI (or other ITK-readable) file or DICOM folder."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{case}: {field}: file not found: {path}")
        if path.is_dir():
            check_dicom_series(path, case, field, instance_order=self.dicom_reader == "pydicom")
            reader = ITKReader() if self.dicom_reader == "itk" else PydicomReader()
        elif path.name.endswith((".nii", ".nii.gz")):
            reader = NibabelReader()
        else:
            reader = None
        try:
            image = LoadImage(reader=reader, image_only=True, dtype=np.float32)(str(path))
        except Exception as err:  # any reader failure means an unreadable file
            raise ValueError(f"{case}: {field}: cannot read {path.name} ({error_message(err)})") from None
        shape = tuple(image.shape)
        spatial = shape
        while len(spatial) > 3 and spatial[-1] == 1:
            spatial = spatial[:-1]
        if len(spatial) != 3 or min(spatial) < 2:
            dims = 2 if len(spatial) == 3 else len(spatial)
            raise ValueError(f"{case}: {field}: {dims}D image of shape {shape}; need a single 3D volume")
        return MetaTensor(image.as_tensor().reshape(spatial)[None], meta=dict(image.meta))

    def _from_patch_files(self, d: dict[Hashable, Any]) -> dict[str, MetaTensor]:
        case, out = _case(d), {}
        for side, key in zip(SIDES, ("patch_right", "patch_left"), strict=True):
            patch = self.orient(self.load_volume(case, key, d[key]))
            affine = np.asarray(patch.affine, dtype=np.float64)
            _check_obliquity(case, key, affine, self.max_obliquity)
            if tuple(patch.shape[1:]) != self.patch_size:
                raise ValueError(
                    f"{case}: {key}: shape {tuple(patch.shape[1:])} in RAS order, expected {self.patch_size}"
                )
            spacing = _spacing(affine)
            if _spacing_differs(spacing, self.target_spacing, self.spacing_tolerance):
                logger.warning(
                    "%s: %s: voxel size %s mm differs from %s mm; pre-cropped patches are used as stored",
                    case, key, _fmt(np.round(spacing, 3)), _fmt(self.target_spacing),
                )  # fmt: skip
            patch = self.flip(patch) if side == "right" and self.mirror_right else patch
            out[key] = self._finish(case, key, side, patch)
        return out

    def _from_mat(self, d: dict[Hashable, Any]) -> dict[str, Any]:
        case = _case(d)
        pair = read_mat_pair(d["mat"], case)
        out: dict[str, Any] = {}
        for side, name, array in zip(SIDES, ("right_patch", "left_patch"), (pair.right, pair.left), strict=True):
            lr_axis = self.mat_lr_axis
            if self.mat_ornt is not None:
                array, lr_axis = nio.apply_orientation(array, self.mat_ornt), LR_AXIS
            if array.shape != self.patch_size:
                raise ValueError(f"{case}: mat: {name} has shape {array.shape}, expected {self.patch_size}")
            if side == "right" and self.mirror_right:
                array = np.flip(array, axis=lr_axis)
            patch = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None])
            out[f"patch_{side}"] = self._finish(case, "mat", side, patch)
        if pair.true_sbr is not None:
            for key, value in zip(SBR_KEYS, pair.true_sbr, strict=True):
                sbr = value * MAT_SBR_MAX
                if problem := sbr_problem(sbr):
                    raise ValueError(f"{case}: mat: true_sbr x {MAT_SBR_MAX:g} gives {key} {problem}")
                if d.get(key) is None:
                    out[key] = sbr
        if self.require_sbr:
            for key in SBR_KEYS:
                if d.get(key) is None and out.get(key) is None:
                    raise ValueError(f"{case}: {key}: {sbr_problem(None)} (none in the case, no true_sbr in the .mat)")
        return out

    def _finish(self, case: str, field: str, side: str, patch: MetaTensor) -> MetaTensor:
        """Edge-replicate the margin of a pre-cropped patch and check it."""
        patch = self.pad(patch) if self.margins.any() else patch
        _check_patch(case, field, f"the {side} patch", patch, self.core)
        return patch


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
        allow_missing_keys: accept cases where both SBRs are absent (inference on unlabelled cases).
        fill_missing: label value for such cases (e.g. NaN, so labelled and unlabelled cases can share a batch);
            None leaves the label out.
    """

    max_plausible_sbr = SBR_RANGE[1]

    def __init__(
        self,
        keys: KeysCollection = ("sbr_right", "sbr_left"),
        sbr_max: float = 6.84,
        label_key: str = "label",
        allow_missing_keys: bool = False,
        fill_missing: float | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"SBRTargetd needs the right and left SBR keys, got {self.keys}.")
        self.fill_missing = fill_missing
        if sbr_max <= 0:
            raise ValueError(f"sbr_max must be positive, got {sbr_max}.")
        self.sbr_max = float(sbr_max)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [k for k in self.keys if d.get(k) is not None]
        if not present and self.allow_missing_keys:
            if self.fill_missing is not None:
                d[self.label_key] = torch.full((2,), float(self.fill_missing), dtype=torch.float32)
            return d
        values = []
        for key in self.keys:
            value = d.get(key)
            if problem := sbr_problem(value):
                raise ValueError(f"{_case(d)}: {key}: {problem}")
            values.append(float(value) / self.sbr_max)
        d[self.label_key] = torch.tensor(values, dtype=torch.float32)
        return d
