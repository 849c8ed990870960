"""One datalist case, in any of its forms, to the mirrored nigral patch pair (:class:`LoadNigralPatchesd`).

- full volume (``image``: NIfTI file or DICOM series folder, MONAI ``LoadImage`` with ``NibabelReader`` /
  ``ITKReader`` / ``PydicomReader``) -> :class:`~bundle.data.patches.ExtractNigralPatchesd`;
- patch files (``patch_right``, ``patch_left``) -> reorient to RAS, mirror the right patch;
- MATLAB pair (``mat``, the original public release) -> arrays in stored order, mirror ``right_patch``.

Every bad input raises a one-line ``ValueError`` (``FileNotFoundError`` for a missing file) starting with
``"{case_id}: {field}: "``; :func:`bundle.data.readers.error_message` recovers it from MONAI's wrapped exceptions.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
from monai.data import ITKReader, MetaTensor, NibabelReader, PydicomReader
from monai.transforms import BorderPad, Flip, LoadImage, MapTransform, Orientation, Transform
from nibabel import orientations as nio

from bundle.constants import DEFAULT_SBR_MAX, PATCH_SIZE, SIDES, TARGET_SPACING
from bundle.data.datalist import SBR_KEYS, case_form, sbr_problem, validate_case
from bundle.data.patches import (
    LR_AXIS,
    ExtractNigralPatchesd,
    case_id,
    check_obliquity,
    check_patch,
    format_numbers,
    margins_of,
    spacing_differs,
    spacing_of,
)
from bundle.data.readers import check_dicom_series, read_mat_pair, short_reason

REPEATED_NOTICE_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin",)
"""Loggers that repeat one notice for every ``LoadImage`` made (MONAI's nvImageCodec notice); shown once per run."""


class FirstOccurrenceFilter(logging.Filter):
    """Let each distinct message through once per process (MONAI logs its nvImageCodec notice each time a
    ``LoadImage`` is built: per transform and per cache worker thread). Written here: the standard library's
    ``warnings`` "once" action covers ``warnings.warn`` only, not ``logging``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


for _name in REPEATED_NOTICE_LOGGERS:
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, FirstOccurrenceFilter) for f in _logger.filters):
        _logger.addFilter(FirstOccurrenceFilter())

__all__ = ["LoadNigralPatchesd", "LoadVolumed", "VolumeReader", "MAT_SBR_MAX"]

MAT_SBR_MAX = DEFAULT_SBR_MAX
"""The original release stores ``true_sbr`` divided by this constant (the paper's sbr_max)."""

logger = logging.getLogger(__name__)


def _missing(path: Path) -> str:
    """Why an absent ``path`` is absent: a symbolic link loop, a broken link, or no file."""
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as err:
            return "symbolic link loop" if err.errno == errno.ELOOP else "broken symbolic link (its target is missing)"
    return "file not found"


def _nifti_problem(path: Path) -> str | None:
    """What nibabel says of an unreadable NIfTI file (MONAI's loader reports every reader's failure at length)."""
    if path.stat().st_size == 0:
        return "empty file"
    try:
        np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:
        return f"not a readable NIfTI file: {short_reason(err)}"
    return None


class VolumeReader:
    """Read one full volume (NIfTI file, other ITK-readable file, or DICOM series folder) as a channel-first 3D
    float32 ``MetaTensor`` with its scanner-RAS affine; the one reader of the regressor's and the localiser's inputs.

    A DICOM folder is checked by :func:`bundle.data.readers.check_dicom_series` first, then read by ``dicom_reader``:
    ``"itk"`` (``ITKReader``, slices sorted by position) or ``"pydicom"`` (``PydicomReader``, sorted by
    InstanceNumber, which must then follow the slice positions). Every failure is a one-line error that starts with
    ``"{case}: {field}: "``.
    """

    def __init__(self, dicom_reader: Literal["itk", "pydicom"] = "itk") -> None:
        if dicom_reader not in ("itk", "pydicom"):
            raise ValueError(f"dicom_reader must be 'itk' or 'pydicom', got {dicom_reader!r}.")
        self.dicom_reader = dicom_reader
        self._loaders: dict[str, LoadImage] = {}

    def __call__(self, case: str, field: str, path: str | Path) -> MetaTensor:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{case}: {field}: {_missing(path)}: {path}")
        if path.is_dir():
            check_dicom_series(path, case, field, instance_order=self.dicom_reader == "pydicom")
            kind = self.dicom_reader
        elif path.name.endswith((".nii", ".nii.gz")):
            kind = "nifti"
        else:
            kind = "any"
        try:
            image = self._loader(kind)(str(path))
        except Exception as err:  # any reader failure means an unreadable file
            reason = _nifti_problem(path) if kind == "nifti" else None
            raise ValueError(f"{case}: {field}: cannot read {path.name} ({reason or short_reason(err)})") from None
        shape = tuple(image.shape)
        spatial = shape
        while len(spatial) > 3 and spatial[-1] == 1:
            spatial = spatial[:-1]
        if len(spatial) != 3 or min(spatial) < 2:
            dims = 2 if len(spatial) == 3 else len(spatial)
            raise ValueError(f"{case}: {field}: {dims}D image of shape {shape}; need a single 3D volume")
        return MetaTensor(image.as_tensor().reshape(spatial)[None], meta=dict(image.meta))

    def _loader(self, kind: str) -> LoadImage:
        """One MONAI ``LoadImage`` per reader kind, made on first use and reused for every case."""
        if kind not in self._loaders:
            reader = {"nifti": NibabelReader, "itk": ITKReader, "pydicom": PydicomReader}.get(kind)
            self._loaders[kind] = LoadImage(reader=reader() if reader else None, image_only=True, dtype=np.float32)
        return self._loaders[kind]


class LoadVolumed(MapTransform):
    """Replace the path (or DICOM folder) under ``keys`` by the volume, read by :class:`VolumeReader` (the same
    readers and checks as :class:`LoadNigralPatchesd`)."""

    def __init__(self, keys: str = "image", dicom_reader: Literal["itk", "pydicom"] = "itk") -> None:
        super().__init__(keys)
        self.read_volume = VolumeReader(dicom_reader)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.read_volume(case_id(d), str(key), d[key])
        return d


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
        if mat_lr_axis not in (0, 1, 2):
            raise ValueError(f"mat_lr_axis must be 0, 1 or 2, got {mat_lr_axis!r}.")
        self.patch_size = tuple(int(s) for s in patch_size)
        self.margins = margins_of(margin)
        self.core = tuple(slice(int(m), int(m + p)) for m, p in zip(self.margins, self.patch_size, strict=True))
        self.mirror_right = mirror_right
        self.target_spacing = np.asarray(target_spacing, dtype=np.float64)
        self.spacing_tolerance = float(spacing_tolerance)
        self.dicom_reader = dicom_reader
        self.read_volume = VolumeReader(dicom_reader)
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
            d = self.extract(dict(d, image=self.load_volume(case_id(d), "image", d["image"])))
            d.pop("image", None)
        elif form == "patches":
            d.update(self._from_patch_files(d))
        else:
            d.update(self._from_mat(d))
        return d

    def load_volume(self, case: str, field: str, path: str | Path) -> MetaTensor:
        """A channel-first 3D float32 ``MetaTensor`` of ``path`` (see :class:`VolumeReader`)."""
        return self.read_volume(case, field, path)

    def _from_patch_files(self, d: dict[Hashable, Any]) -> dict[str, MetaTensor]:
        case, out = case_id(d), {}
        for side, key in zip(SIDES, ("patch_right", "patch_left"), strict=True):
            patch = self.orient(self.load_volume(case, key, d[key]))
            affine = np.asarray(patch.affine, dtype=np.float64)
            check_obliquity(case, key, affine, self.max_obliquity)
            if tuple(patch.shape[1:]) != self.patch_size:
                raise ValueError(
                    f"{case}: {key}: shape {tuple(patch.shape[1:])} in RAS order, expected {self.patch_size}"
                )
            spacing = spacing_of(affine)
            if spacing_differs(spacing, self.target_spacing, self.spacing_tolerance):
                logger.warning(
                    "%s: %s: voxel size %s mm differs from %s mm; pre-cropped patches are used as stored",
                    case, key, format_numbers(np.round(spacing, 3)), format_numbers(self.target_spacing),
                )  # fmt: skip
            patch = self.flip(patch) if side == "right" and self.mirror_right else patch
            out[key] = self._finish(case, key, side, patch)
        return out

    def _from_mat(self, d: dict[Hashable, Any]) -> dict[str, Any]:
        case = case_id(d)
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
        check_patch(case, field, f"the {side} patch", patch, self.core)
        return patch
