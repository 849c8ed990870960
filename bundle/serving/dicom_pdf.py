"""The PDF report as a DICOM Encapsulated PDF instance in the patient's study, beside the SR.

pydicom has no writer for this IOD and highdicom none either, so the attributes of the Encapsulated PDF IOD (PS3.3
A.45.1: patient, general study, encapsulated document series, general equipment, SC equipment, encapsulated
document, SOP common) are set here by hand from the SR it accompanies.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["ENCAPSULATED_PDF", "PDF_SERIES_DESCRIPTION", "encapsulate_pdf"]

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
"""Encapsulated PDF Storage."""
PDF_SERIES_DESCRIPTION = "SBR report PDF - RESEARCH USE ONLY"

_PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                      "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")  # fmt: skip


def encapsulate_pdf(
    pdf: str | os.PathLike, report: Dataset, path: str | os.PathLike, series_number: int = 9902
) -> Path:
    """Write ``pdf`` as an Encapsulated PDF instance at ``path``: the patient and study of ``report`` (the SBR SR
    of the same study), a new series, and the SR as its source instance."""
    data = Path(pdf).read_bytes()
    if not data.startswith(b"%PDF"):
        raise ValueError(f"{pdf}: not a PDF file")
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword in _PATIENT_AND_STUDY:
        setattr(ds, keyword, getattr(report, keyword, ""))
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_PDF, generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "DOC", generate_uid(), series_number
    ds.SeriesDescription = PDF_SERIES_DESCRIPTION
    ds.Manufacturer = getattr(report, "Manufacturer", "nigral-sbr bundle")
    ds.ConversionType = "WSD"  # workstation
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the report names the patient
    ds.DocumentTitle = "Striatal SBR predicted from nigral SMWI - research use only"
    ds.ConceptNameCodeSequence = []
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = report.SOPClassUID, report.SOPInstanceUID
    ds.SourceInstanceSequence = [source]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(data)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = Path(path)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path
