"""MONAI Label server app: ``monailabel start_server --app apps/label --studies <folder of SMWI volumes>``.

Registers one infer task, ``nigral_sbr`` (:class:`~apps.label.sbr_task.SBRInferTask`). The server (unlike the task
API the tests use) needs MONAI Label's full install in its own environment; see docs/integrations/label.md. Config
(``--conf``): ``models`` (default: the source checkout's models/ folder; give it with an installed package) and
``mc_samples`` (default 100).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the server imports this file by path

from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402

import bundle  # noqa: E402
from apps.label.sbr_task import SBRInferTask  # noqa: E402
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

    def init_infers(self) -> dict[str, InferTask]:
        return {"nigral_sbr": SBRInferTask(models=self.models, mc_samples=self.mc_samples)}
