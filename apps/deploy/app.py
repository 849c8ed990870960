"""The MONAI Deploy application: DICOM loader -> series selector -> series to volume -> SBR inference -> writers.

Run it with the SDK's arguments (``-i`` DICOM folder, ``-o`` output folder, ``-m`` models folder; without ``-m``
the source checkout's ``models/``, see :func:`bundle.resources.bundle_root`)::

    python -m apps.deploy -i dicom/ -o output/ -m models/

``NIGRAL_SBR_RULES`` (a JSON file of series selection rules), ``NIGRAL_SBR_CENTROIDS`` (a JSON side file with
``centroid_right``, ``centroid_left`` and ``centroid_space``), ``NIGRAL_SBR_MC_SAMPLES`` and ``NIGRAL_SBR_BACKEND``
(``auto``, ``torch`` or ``openvino``, the inference config's ``inference_backend``; ``auto`` uses OpenVINO only
where it is installed in the app's environment and measured faster on the CPU's class) change the defaults.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator, DICOMSeriesToVolumeOperator

import bundle
from apps.deploy.operators import SBRInferenceOperator, SBRReportWriterOperator
from apps.deploy.rules import SELECTION_RULES
from bundle.constants import MC_SAMPLES
from bundle.resources import bundle_root

__all__ = ["NigralSBRApp", "SELECTION_RULES", "main"]


class NigralSBRApp(Application):
    """Striatal DaT SBR (right, left) with intervals from a nigral SMWI DICOM series. Research use only."""

    name = "nigral-sbr"
    description = __doc__
    version = bundle.__version__

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        output = Path(context.output_path)
        models = Path(context.model_path) if context.model_path else bundle_root() / "models"
        rules = os.environ.get("NIGRAL_SBR_RULES")
        centroids = os.environ.get("NIGRAL_SBR_CENTROIDS")
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path),
                                         name="dicom_loader")  # fmt: skip
        selector = DICOMSeriesSelectorOperator(
            self, rules=Path(rules).read_text() if rules else json.dumps(SELECTION_RULES), name="series_selector"
        )
        to_volume = DICOMSeriesToVolumeOperator(self, name="series_to_volume")
        inference = SBRInferenceOperator(
            self, output_folder=output, models=models,
            centroids=json.loads(Path(centroids).read_text()) if centroids else None,
            mc_samples=int(os.environ.get("NIGRAL_SBR_MC_SAMPLES", MC_SAMPLES)), name="sbr_inference",
            overrides={"inference_backend": os.environ.get("NIGRAL_SBR_BACKEND", "auto")},
        )  # fmt: skip
        writer = SBRReportWriterOperator(self, output_folder=output, name="sbr_report_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(selector, inference, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, inference, {("image", "image")})
        self.add_flow(inference, writer, {("prediction", "prediction")})


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    NigralSBRApp().run()


if __name__ == "__main__":
    main()
