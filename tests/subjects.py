"""Test helpers: one synthetic subject stored in the ways real cohorts arrive (NIfTI RAS / LPS / permuted, DICOM)."""

from __future__ import annotations

import functools
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from bundle.synthetic.smwi_cohort import render_subject

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@functools.lru_cache(maxsize=1)
def demo_subject() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(int16 volume [X, Y, Z] in RAS order, RAS affine, right centroid, left centroid in voxels); cached."""
    return render_subject(4.2, 2.1, np.random.default_rng(7))


def world(affine: np.ndarray, index) -> list[float]:
    """Scanner RAS mm of a voxel index."""
    return (affine @ np.append(np.asarray(index, dtype=float), 1.0))[:3].tolist()


def reorder(volume: np.ndarray, affine: np.ndarray, axes=(0, 1, 2), flips=(False, False, False)):
    """The same image stored differently: array axes permuted (new axis i = old axis ``axes[i]``), then flipped.

    Returns (volume, affine, index map old voxel index -> new voxel index).
    """
    shape = np.array(volume.shape)
    perm = np.zeros((4, 4))
    perm[3, 3] = 1.0
    for new, old in enumerate(axes):  # old index = P @ new index
        perm[old, new] = 1.0
    data = np.transpose(volume, axes)
    new_shape = shape[list(axes)]
    flip = np.eye(4)
    for i, f in enumerate(flips):
        if f:
            flip[i, i], flip[i, 3] = -1.0, new_shape[i] - 1
            data = np.flip(data, axis=i)
    new_affine = affine @ perm @ flip
    to_new = np.linalg.inv(perm @ flip)

    def index_map(index):
        return np.rint(to_new @ np.append(np.asarray(index, float), 1.0))[:3].astype(int).tolist()

    return np.ascontiguousarray(data), new_affine, index_map


def save_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return str(path)


def study_attributes(name: str, patient_id: str, accession: str) -> dict:
    """The patient and study attributes of a synthetic DICOM study (for :func:`write_dicom_series`'s
    ``attributes``), one patient each."""
    return {"PatientName": name, "PatientID": patient_id, "PatientBirthDate": "19500101", "PatientSex": "O",
            "StudyDate": "20261204", "StudyTime": "090000", "StudyID": "1", "AccessionNumber": accession,
            "ReferringPhysicianName": "", "StudyDescription": "synthetic midbrain MRI"}  # fmt: skip


def write_dicom_series(
    folder: Path, volume: np.ndarray, affine: np.ndarray, seed: int = 0, attributes: dict | None = None
) -> Path:
    """Write ``volume`` (RAS affine) as a single-frame MR DICOM series: one file per slice, shuffled file names.

    Stored the way scanners do: columns toward the subject's left, rows toward posterior (LPS), slices along +z;
    ImagePositionPatient / ImageOrientationPatient / PixelSpacing follow from ``affine``. ``attributes`` (e.g. the
    patient, study and series descriptions a report needs) are set on every slice.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lps_volume, lps_affine, _ = reorder(volume, affine, flips=(True, True, False))
    patient = RAS_TO_LPS @ lps_affine  # index -> LPS mm
    spacing = np.linalg.norm(lps_affine[:3, :3], axis=0)
    iop = np.concatenate([patient[:3, 0] / spacing[0], patient[:3, 1] / spacing[1]])
    uids = {key: generate_uid() for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")}
    for k in rng.permutation(volume.shape[2]):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = MRImageStorage, sop, "MR", "SYNTHETIC"
        for key, value in uids.items():
            setattr(ds, key, value)
        ds.InstanceNumber = int(k) + 1
        ds.ImageOrientationPatient = [round(float(v), 6) for v in iop]
        ds.ImagePositionPatient = [round(float(v), 6) for v in (patient @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # [between rows, between columns]
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = lps_volume.shape[1], lps_volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(lps_volume[:, :, k].T, dtype=np.int16).tobytes()  # [row, column]
        for key, value in (attributes or {}).items():
            setattr(ds, key, value)
        ds.save_as(folder / f"IM{rng.integers(10**9):09d}.dcm", enforce_file_format=True)
    return folder


def tiny_model(path: Path) -> Path:
    """A tiny recorded regressor (channels 2-2-2-2) whose output is not trivial: normalised SBR near 0.5 (SBR near
    3.4) that varies with the patch, so that comparisons of numbers mean something."""
    import torch

    from bundle.constants import DEFAULT_SBR_MAX
    from bundle.method.networks import VGGRegressor3D
    from bundle.workflows.checkpoints import ModelRecord

    torch.manual_seed(0)
    network = VGGRegressor3D(channels=(2, 2, 2, 2))
    linear = [layer for layer in network.modules() if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for layer in linear:
            layer.weight.mul_(20.0)
        linear[-1].bias.fill_(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ModelRecord(network, sbr_max=DEFAULT_SBR_MAX).state_dict(), path)
    return path


def same_study(paths, uid: str | None = None) -> str:
    """Put the DICOM files ``paths`` (series written by :func:`write_dicom_series`, each in a study of its own) into
    one study: their StudyInstanceUID becomes ``uid`` (default: a new one), which is returned."""
    import pydicom

    uid = uid or pydicom.uid.generate_uid()
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = uid
        ds.save_as(path)
    return uid
