"""MONAI Label server app. Start it from the repository root with
``python -m apps.label start_server --app apps/label --studies <folder of SMWI volumes> [--conf models <folder>]``
(MONAI Label's own command line after a pydicom 3 import alias, :mod:`apps.label.server`; plain ``monailabel
start_server`` stops on that import). Research use only.

Registers one infer task, ``nigral_sbr`` (:class:`~apps.label.sbr_task.SBRInferTask`). The server needs the ``label``
and ``label-server`` extras (see docs/integrations/label.md). Config (``--conf``): ``models`` (folder with
``model.pt`` or ``model.ts``, ``calibration.json`` and ``localiser.pt``; default: the source checkout's models/
folder; give it with an installed package) and ``mc_samples`` (default 100).

A case the task refuses (unreadable volume, not two clicks, the localiser's refusal or absence) reaches the client as
HTTP 422 whose JSON ``detail`` is the one-line reason naming the case; an unknown model, a models folder without
``model.pt`` / ``model.ts`` or an image id the studies folder does not hold is HTTP 404; model files the workflow
cannot read are HTTP 503 with the workflow's line. MONAI Label itself would answer all of them with a bare 500.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the server imports this file by path

from fastapi import HTTPException  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402

import bundle  # noqa: E402
from apps.label.sbr_task import CaseRefused, ModelFilesUnusable, SBRInferTask  # noqa: E402
from bundle.constants import MC_SAMPLES  # noqa: E402
from bundle.resources import bundle_root  # noqa: E402


class NigralSBRLabelApp(MONAILabelApp):
    """Striatal DaT SBR from nigral SMWI in MONAI Label viewers (3D Slicer, OHIF). Research use only."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.models = Path(conf.get("models", bundle_root() / "models"))
        self.mc_samples = int(conf.get("mc_samples", MC_SAMPLES))
        super().__init__(
            app_dir=app_dir, studies=studies, conf=conf, name="nigral-sbr", version=bundle.__version__,
            description="Striatal DaT SBR (right, left) with intervals from nigral SMWI - research use only",
        )  # fmt: skip

    def _download_dcmqi_tools(self) -> None:
        """MONAI Label fetches dcmqi's DICOM-SEG converters from GitHub when it opens a DICOMweb datastore (e.g.
        ``--studies http://127.0.0.1:8042/dicom-web``); this app writes no DICOM-SEG (its label is NIfTI), so it
        skips that download, which also lets the server start without internet access."""
        logging.getLogger(__name__).info("dcmqi tools not fetched: this app writes no DICOM-SEG")

    def init_infers(self) -> dict[str, InferTask]:
        return {"nigral_sbr": SBRInferTask(models=self.models, mc_samples=self.mc_samples)}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's ``infer``, with refusals as HTTP errors that FastAPI sends as they are: a model name this app
        does not have, a model without its file (not in ``/info/``) or an image id that the local studies folder does
        not hold is 404, a case the task refuses (:class:`CaseRefused`) 422, model files the workflow cannot use
        (:class:`ModelFilesUnusable`) 503; the ``detail`` is one line. Anything else stays a bare 500 (a bug)."""
        task = self._infers.get(request.get("model"))
        if task is None:
            raise HTTPException(status_code=404, detail=f"{request.get('model')}: no such model (see /info/)")
        if not task.is_valid():  # /info/ does not list it either
            raise HTTPException(status_code=404, detail=f"{request.get('model')}: no model.pt or model.ts in "
                                f"{getattr(task, 'models', '?')} (see --conf models)")  # fmt: skip
        image = request.get("image")
        store = datastore or self.datastore()
        if isinstance(image, str) and image and not os.path.exists(image) and isinstance(store, LocalDatastore):
            if not store.get_image_uri(image):
                raise HTTPException(status_code=404, detail=f"{image}: no such image in the studies folder")
        try:
            return super().infer(request, datastore)
        except CaseRefused as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        except ModelFilesUnusable as err:
            raise HTTPException(status_code=503, detail=f"{request.get('model')}: {err}") from None
