"""The application's own operators: the bundle's symmetric MC inference on the selected volume, and the writers.

The SDK's ``MonaiBundleInferenceOperator`` cannot serve this model: it feeds one image tensor through the bundle's
``preprocessing`` and calls ``model(input)``, while the SBR needs the two nigrosome-1 centroids (from the localiser
or a side file), the mirrored patch pair of the paired network and ``mc_forward`` for the interval. So
:class:`SBRInferenceOperator` runs the bundle's own ``inference`` workflow (the same code as
``python -m bundle run inference``) on the volume the SDK's series-to-volume operator made.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from monai.deploy.core import Fragment, Image, Operator, OperatorSpec
from PIL import Image as PILImage

import bundle
from bundle.constants import MC_SAMPLES
from bundle.io import atomic_open, safe_file_stem, write_json
from bundle.serving.case import CasePrediction, default_checkpoint, predict_case
from bundle.serving.dicom_pdf import encapsulate_pdf
from bundle.serving.dicom_sr import write_sbr_report

__all__ = ["SBRInferenceOperator", "SBRReportWriterOperator", "case_name", "volume_to_nifti"]

logger = logging.getLogger(__name__)


def volume_to_nifti(image: Image, path: Path) -> Path:
    """Save the SDK's volume (array ``[slice, row, column]``, ``metadata()["affine"]`` RAS for column, row, slice
    indices) as NIfTI, indices reordered to the affine's ``(column, row, slice)``."""
    array = np.transpose(np.asarray(image.asnumpy()), (2, 1, 0))
    affine = np.asarray(image.metadata()["affine"], dtype=float)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), str(path))
    return path


def case_name(dataset: Any, series_uid: str) -> str:
    """``<PatientID>_S<SeriesNumber>`` for the report's title and the file names, else the series UID."""
    patient, number = getattr(dataset, "PatientID", ""), getattr(dataset, "SeriesNumber", "")
    if not patient:
        return str(series_uid)
    return f"{patient}_S{number}" if number not in ("", None) else str(patient)


class SBRInferenceOperator(Operator):
    """``image`` (SDK volume) and the selected series -> ``prediction`` (:class:`~bundle.serving.case.CasePrediction`).

    Args:
        fragment: the application.
        output_folder: the app's output folder; the inference run goes to ``<output_folder>/inference``.
        models: folder with ``model.ts`` or ``model.pt``, ``localiser.pt`` and optionally ``calibration.json``.
        centroids: optional side file values (``centroid_right``, ``centroid_left``, ``centroid_space``); without
            them the bundle's localiser finds the centroids.
        mc_samples: Monte-Carlo dropout samples (0: deterministic, no interval).
        overrides: further config overrides of the bundle's inference workflow.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: Path,
        models: Path,
        centroids: Mapping[str, Any] | None = None,
        mc_samples: int = MC_SAMPLES,
        overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.models = Path(models)
        self.centroids = dict(centroids or {"centroid_space": "auto"})
        self.mc_samples = int(mc_samples)
        self.overrides = dict(overrides or {})
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.input("study_selected_series_list")
        spec.output("prediction")

    def compute(self, op_input, op_output, context) -> None:
        image = op_input.receive("image")
        series = op_input.receive("study_selected_series_list")[0].selected_series[0].series
        case_id = case_name(series.get_sop_instances()[0].get_native_sop_instance(), series.SeriesInstanceUID)
        run_dir = self.output_folder / "inference"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        volume = volume_to_nifti(image, run_dir / f"{safe_file_stem(case_id)}.nii.gz")
        overrides = {"localiser_path": str(self.models / "localiser.pt"), **self.overrides}
        prediction = predict_case(
            {"id": case_id, "image": str(volume), **self.centroids}, run_dir, default_checkpoint(self.models),
            self.mc_samples, overrides=overrides,
        )  # fmt: skip
        op_output.emit(prediction, "prediction")


class SBRReportWriterOperator(Operator):
    """``prediction`` and the selected series -> ``sbr_result.json``, ``sbr_report.png``, ``sbr_report.pdf`` and the
    DICOM Comprehensive SR ``sbr_sr.dcm`` with the PDF as a DICOM Encapsulated PDF ``sbr_report_pdf.dcm`` in the same
    study, in ``output_folder``."""

    def __init__(self, fragment: Fragment, *args: Any, output_folder: Path, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("prediction")
        spec.input("study_selected_series_list")

    def compute(self, op_input, op_output, context) -> None:
        prediction: CasePrediction = op_input.receive("prediction")
        selected = op_input.receive("study_selected_series_list")[0].selected_series[0]
        evidence = [instance.get_native_sop_instance() for instance in selected.series.get_sop_instances()]
        out = self.output_folder
        result = {**prediction.summary(), "series_instance_uid": selected.series.SeriesInstanceUID,
                  "selection": selected.selection_name, "bundle_version": bundle.__version__}  # fmt: skip
        with atomic_open(out / "sbr_report.png", "wb") as f:
            f.write(prediction.report_png.read_bytes())
        with atomic_open(out / "sbr_report.pdf", "wb") as f:
            PILImage.open(prediction.report_png).convert("RGB").save(f, format="PDF", resolution=100.0)
        report = write_sbr_report(result, evidence, out / "sbr_sr.dcm", bundle.__version__)
        encapsulate_pdf(out / "sbr_report.pdf", pydicom.dcmread(report), out / "sbr_report_pdf.dcm")
        write_json(out / "sbr_result.json", result)
        logger.info("SBR right %.2f, left %.2f -> %s", result["right"]["sbr"], result["left"]["sbr"], out)
        print(json.dumps({side: result[side] for side in ("right", "left")}))
