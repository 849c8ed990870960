"""Readers for the inputs that MONAI's ``LoadImage`` does not cover, and checks of what it does not check.

- :func:`read_mat_pair`: the original public release's MATLAB patch pair (v5 via scipy, v7.3/HDF5 via h5py).
- :func:`check_dicom_series`: one consistent, gap-free DICOM series in a folder (pydicom headers only), checked
  before the series is read by MONAI's ``ITKReader`` or ``PydicomReader``.

Every error is a one-line ``ValueError`` (``FileNotFoundError`` for a missing path) that starts with
``"{case_id}: {field}: "``, so that a batch job can record it against the case and go on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pydicom
from pydicom.misc import is_dicom
from scipy.io import loadmat

__all__ = [
    "MAT_KEYS",
    "MatPair",
    "error_message",
    "short_reason",
    "read_mat_pair",
    "check_dicom_series",
    "list_dicom_files",
]

MAT_KEYS = ("right_patch", "left_patch")
"""Array names of a ``.mat`` pair; ``true_sbr`` = [right, left] / sbr_max (6.84) is optional."""


@dataclass(frozen=True)
class MatPair:
    """Arrays of one ``.mat`` pair in their stored order (the right patch is not mirrored)."""

    right: np.ndarray
    left: np.ndarray
    true_sbr: tuple[float, float] | None


def read_mat_pair(path: str | os.PathLike, case_id: str = "<no id>", shape: tuple[int, ...] | None = None) -> MatPair:
    """Read ``right_patch``, ``left_patch`` and the optional ``true_sbr`` of a MATLAB file as float32.

    MATLAB v7.3 files are HDF5, read with h5py; their arrays are stored transposed (MATLAB is column-major)
    and are transposed back, so both versions give the array MATLAB shows. ``shape`` (if given) is the
    required shape of each patch. Raises one-line errors naming ``case_id`` and the ``mat`` field.
    """
    path = Path(path)
    where = f"{case_id}: mat:"
    if not path.is_file():
        raise FileNotFoundError(f"{where} file not found: {path}")
    try:
        arrays = _read_h5_mat(path) if _is_hdf5(path) else _read_v5_mat(path)
    except Exception as err:  # any reader failure means a bad file
        raise ValueError(f"{where} cannot read {path} as a MATLAB file ({_one_line(err)})") from None
    missing = [k for k in MAT_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{where} {path.name} has no {', '.join(missing)} (found: {sorted(arrays)})")
    patches = []
    for key in MAT_KEYS:
        try:
            arr = np.asarray(arrays[key], dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{where} {key} is not a numeric array") from None
        if arr.ndim != 3 or (shape is not None and arr.shape != tuple(shape)):
            expected = "x".join(map(str, shape)) if shape is not None else "3D"
            raise ValueError(f"{where} {key} has shape {arr.shape}, expected {expected}")
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"{where} {key} has {bad} NaN/Inf voxels")
        patches.append(arr)
    true_sbr = None
    if "true_sbr" in arrays:
        try:
            values = np.asarray(arrays["true_sbr"], dtype=np.float64).ravel()
        except (TypeError, ValueError):
            values = np.array([])
        if values.size != 2 or not np.all(np.isfinite(values)):
            raise ValueError(f"{where} true_sbr must hold 2 finite numbers [right, left], got {arrays['true_sbr']!r}")
        true_sbr = (float(values[0]), float(values[1]))
    return MatPair(patches[0], patches[1], true_sbr)


def error_message(exc: BaseException) -> str:
    """The one-line root cause of ``exc``, following ``__cause__`` through MONAI's ``RuntimeError`` wrappers.

    The bundle's own input errors come back verbatim (``"{case_id}: {field}: ..."``, whitespace collapsed to one
    line); anything else as :func:`short_reason` (type, first line, no object addresses, bounded length).
    """
    root = _root_cause(exc)
    text = " ".join(str(root).split())
    ours = isinstance(root, ValueError) or (isinstance(root, FileNotFoundError) and root.errno is None)
    return text if ours and text else short_reason(root)


def _root_cause(exc: BaseException) -> BaseException:
    """The last exception of ``exc``'s ``__cause__`` chain (MONAI wraps transform errors in ``RuntimeError``)."""
    root, seen = exc, {id(exc)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    return root


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` of ``exc``'s root cause, object addresses removed, at most ``limit``
    characters: a reason that fits in a one-line error."""
    root = _root_cause(exc)
    text = re.sub(r"<([^<>]*?) at 0x[0-9a-fA-F]+>", r"<\1>", str(root).strip().split("\n")[0])
    reason = f"{type(root).__name__}: {text}" if text else type(root).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _is_hdf5(path: Path) -> bool:
    return bool(h5py.is_hdf5(path))


def _read_v5_mat(path: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}


def _read_h5_mat(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: np.asarray(v).T for k, v in f.items() if isinstance(v, h5py.Dataset)}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# --- DICOM series --------------------------------------------------------------------------------------------------


def list_dicom_files(folder: str | os.PathLike) -> list[Path]:
    """Files directly in ``folder`` that pydicom recognises as DICOM (preamble + ``DICM``), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_dicom(p))


def check_dicom_series(
    folder: str | os.PathLike, case_id: str = "<no id>", field: str = "image", instance_order: bool = False
) -> int:
    """Check that ``folder`` holds exactly one complete, consistent single-frame DICOM series; return its slice count.

    Read from the headers only: one ``SeriesInstanceUID``; the same ``ImageOrientationPatient``, ``PixelSpacing``,
    ``Rows`` and ``Columns`` in every file; slice positions (``ImagePositionPatient`` projected on the slice
    normal) distinct and evenly spaced, so that a missing slice is detected as a gap.
    """
    where = f"{case_id}: {field}:"
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{where} DICOM folder not found: {folder}")
    files = list_dicom_files(folder)
    if not files:
        raise ValueError(f"{where} no DICOM files in {folder}")
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as err:
            raise ValueError(f"{where} cannot read DICOM file {path.name} ({_one_line(err)})") from None
    if len(headers) < 2:
        raise ValueError(f"{where} {folder} holds a single DICOM image; need a 3D series")

    def distinct(tag: str, tol: float | None = None) -> list:
        values = []
        for h in headers:
            value = getattr(h, tag, None)
            if value is None:
                raise ValueError(f"{where} DICOM file {Path(h.filename).name} has no {tag}")
            value = tuple(float(v) for v in value) if tol is not None else value
            if not any(_same(value, v, tol) for v in values):
                values.append(value)
        return values

    series = distinct("SeriesInstanceUID")
    if len(series) > 1:
        raise ValueError(f"{where} {folder} mixes {len(series)} DICOM series; keep one series per folder")
    if getattr(headers[0], "NumberOfFrames", 1) not in (None, 1, "1"):
        raise ValueError(f"{where} multi-frame DICOM is not supported; give a single-frame series")
    orientations = distinct("ImageOrientationPatient", tol=1e-4)
    if len(orientations) > 1:
        n = len(orientations)
        raise ValueError(f"{where} mixed slice orientations in DICOM series ({n} ImageOrientationPatient values)")
    for tag, tol in (("PixelSpacing", 1e-4), ("Rows", None), ("Columns", None)):
        values = distinct(tag, tol)
        if len(values) > 1:
            raise ValueError(f"{where} {tag} differs between the files of the DICOM series ({values})")
    row, col = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
    normal = np.cross(row, col)
    positions = np.array([float(np.dot(normal, _position(h, where))) for h in headers])
    order = np.argsort(positions)
    steps = np.diff(positions[order])
    if np.any(steps < 1e-3):
        raise ValueError(f"{where} two DICOM files have the same slice position; the folder mixes acquisitions")
    step = float(np.median(steps))
    if np.any(np.abs(steps - step) > 0.01 * step + 1e-3):
        k = int(np.argmax(np.abs(steps - step)))
        kind = "missing slice" if steps[k] > 1.5 * step else "uneven slice spacing"
        raise ValueError(
            f"{where} {kind} in the DICOM series: slices {k} and {k + 1} are {steps[k]:.3g} mm apart, "
            f"the others {step:.3g} mm"
        )
    if instance_order:
        numbers = np.array([int(getattr(h, "InstanceNumber", -1)) for h in headers])[order]
        if not (np.all(np.diff(numbers) > 0) or np.all(np.diff(numbers) < 0)):
            raise ValueError(
                f"{where} InstanceNumber does not follow the slice positions; read this series with the ITK reader"
            )
    return len(headers)


def _position(header, where: str) -> np.ndarray:
    """``ImagePositionPatient`` of one header as a float array (one-line error if absent)."""
    value = getattr(header, "ImagePositionPatient", None)
    if value is None or len(value) != 3:
        raise ValueError(f"{where} DICOM file {Path(header.filename).name} has no ImagePositionPatient")
    return np.asarray([float(v) for v in value])


def _same(a, b, tol: float | None) -> bool:
    if tol is None:
        return a == b
    return len(a) == len(b) and bool(np.allclose(a, b, atol=tol))
