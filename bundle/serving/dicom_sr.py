"""The prediction as a DICOM Comprehensive SR (TID 1500 measurement report) written with highdicom, and read back.

Per side one measurement group (tracking identifier ``right`` / ``left``, finding site corpus striatum with its
laterality) with one numeric item: the predicted SBR (a private code: no standard code exists for an MRI-predicted
DaT SBR), whose properties hold the interval as upper / lower measurement uncertainty and the abnormal flag as
normality (SNOMED Normal / Abnormal). The report's evidence is the SMWI series it was computed from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from bundle.constants import SIDES

__all__ = ["SBR_CODE", "SR_SERIES_DESCRIPTION", "write_sbr_report", "read_sbr_report"]

SR_SERIES_DESCRIPTION = "SBR from SMWI - RESEARCH USE ONLY"
"""The series description of the SBR report; a study router takes a series with it as "already processed"."""

TYPE_2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                 "AccessionNumber", "ReferringPhysicianName")  # fmt: skip
"""Type 2 attributes (present, may be empty) the SR copies from its evidence."""

SCHEME = "99NIGSBR"
"""Private coding scheme of this bundle's concepts (DICOM private schemes start with ``99``)."""

SBR_CODE = ("SBR-PRED", SCHEME, "Striatal specific binding ratio predicted from nigral MRI")
"""(value, scheme, meaning) of the predicted-SBR concept."""


def write_sbr_report(
    summary: Mapping[str, Any],
    evidence: Sequence[Dataset],
    path: str | os.PathLike,
    algorithm_version: str,
    series_number: int = 9901,
) -> Path:
    """Write ``summary`` (:meth:`bundle.serving.case.CasePrediction.summary`) as a Comprehensive SR referencing the
    ``evidence`` series (its patient and study are copied) to ``path``. Type 2 patient and study attributes that the
    evidence lacks (an anonymised series often has no birth date) are written empty, as the standard allows."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    for dataset in evidence:
        for keyword in TYPE_2_COPIED:
            if keyword not in dataset:
                setattr(dataset, keyword, None)

    algorithm = hd.sr.AlgorithmIdentification(name="nigral-sbr symmetric regressor", version=algorithm_version)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="nigral-sbr bundle (research use only)"
        ),
    )
    groups = []
    for side in SIDES:
        values = summary[side]
        low, high = values["interval"] or (None, None)
        properties = hd.sr.MeasurementProperties(
            normality=codes.SCT.Abnormal if values["abnormal"] else codes.SCT.Normal,
            upper_measurement_uncertainty=None if high is None else round(high - values["sbr"], 6),
            lower_measurement_uncertainty=None if low is None else round(values["sbr"] - low, 6),
        )
        site = hd.sr.FindingSite(
            anatomic_location=codes.SCT.CorpusStriatum, laterality=getattr(codes.SCT, side.capitalize())
        )
        measurement = hd.sr.Measurement(
            name=hd.sr.CodedConcept(*SBR_CODE), value=float(values["sbr"]), unit=codes.UCUM.NoUnits,
            algorithm_id=algorithm, finding_sites=[site], properties=properties,
        )  # fmt: skip
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=side),
                measurements=[measurement],
                algorithm_id=algorithm,
                finding_sites=[site],
            )  # fmt: skip
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=list(evidence), content=report, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="nigral-sbr bundle",
        series_description=SR_SERIES_DESCRIPTION,
    )  # fmt: skip
    path = Path(path)
    sr.save_as(path, enforce_file_format=True)
    return path


def _items(sequence: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in sequence:
        yield item
        yield from _items(getattr(item, "ContentSequence", []))


def _name(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodeValue, code.CodingSchemeDesignator


def read_sbr_report(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Per side: ``sbr``, ``low``, ``high`` (None without an interval) and ``abnormal``, from an SR written by
    :func:`write_sbr_report` (read with pydicom only)."""
    dataset = pydicom.dcmread(path)
    out: dict[str, dict[str, Any]] = {}
    for group in _items(dataset.ContentSequence):
        if group.ValueType != "CONTAINER" or not hasattr(group, "ContentSequence"):
            continue
        side = next((i.TextValue for i in group.ContentSequence if _name(i) == ("112039", "DCM")), None)
        numbers = [i for i in group.ContentSequence if i.ValueType == "NUM" and _name(i) == SBR_CODE[:2]]
        if side not in SIDES or not numbers:
            continue
        sbr_item = numbers[0]
        sbr = float(sbr_item.MeasuredValueSequence[0].NumericValue)
        found = {"sbr": sbr, "low": None, "high": None, "abnormal": None}
        for item in getattr(sbr_item, "ContentSequence", []):
            if item.ValueType == "NUM" and _name(item) == ("371886008", "SCT"):  # upper uncertainty
                found["high"] = sbr + float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "NUM" and _name(item) == ("371885007", "SCT"):  # lower uncertainty
                found["low"] = sbr - float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CODE" and _name(item) == ("121402", "DCM"):  # normality
                found["abnormal"] = item.ConceptCodeSequence[0].CodeValue == "263654008"
        out[side] = found
    return out
