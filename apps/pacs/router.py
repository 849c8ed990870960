"""The study router: follows Orthanc's ``/changes`` feed, and for each study that became stable runs the MONAI
Deploy app on its SMWI series and stores the app's DICOM SR and Encapsulated PDF back into the same study.

Why a worker on ``/changes`` (not an Orthanc Python plugin, not C-STORE routing): it runs in the bundle's own Python
environment, beside any Orthanc or none, with the PACS's REST API as its only contact, so an Orthanc upgrade or
restart does not touch it and it can be pointed at an existing PACS without installing anything into it. The feed
has sequence numbers, so the router resumes where it stopped (its state file), and the stored SR is the marker that
a study is done, so a lost state file or a second router does not store results twice.

A study is processed in a working folder that is deleted afterwards; the Deploy app runs as a subprocess (its own
environment, bounded memory: one study at a time). Every outcome is one log line naming the study.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pydicom

from apps.deploy.rules import series_matches
from apps.pacs.client import OrthancClient
from bundle.io import write_json
from bundle.serving.dicom_pdf import PDF_SERIES_DESCRIPTION
from bundle.serving.dicom_sr import SR_SERIES_DESCRIPTION

__all__ = ["StudyRouter", "OUTPUTS"]

logger = logging.getLogger(__name__)

OUTPUTS = ("sbr_sr.dcm", "sbr_report_pdf.dcm")
"""The Deploy app's files the router stores into the study: the DICOM SR and the Encapsulated PDF."""
DEPLOY_TIMEOUT_S = 900


class StudyRouter:
    """Route stable studies of ``client``'s Orthanc through the Deploy app.

    Args:
        client: the PACS.
        state_file: where the last handled ``/changes`` sequence number is kept (written atomically).
        deploy_command: how to start the Deploy app, e.g. ``[".venv-deploy/bin/python", "-m", "apps.deploy"]``;
            ``-i``, ``-o`` (and ``-m models``) are added.
        models: the models folder for the app (default: the app's own default, the checkout's ``models/``).
        env: the app's environment variables (e.g. ``NIGRAL_SBR_MC_SAMPLES``).
    """

    def __init__(
        self,
        client: OrthancClient,
        state_file: Path,
        deploy_command: Sequence[str],
        models: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.client, self.state_file = client, Path(state_file)
        self.deploy_command, self.models, self.env, self.cwd = list(deploy_command), models, env, cwd

    @property
    def last_seq(self) -> int:
        if not self.state_file.is_file():
            return 0
        return int(json.loads(self.state_file.read_text())["last_seq"])

    def poll(self, limit: int = 100, max_batches: int = 1000) -> list[tuple[str, str]]:
        """Handle every change since the last handled one, ``limit`` at a time (at most ``max_batches`` pages);
        (study id, outcome) per stable study. The state file moves past each change once it is handled, whatever
        the outcome."""
        outcomes = []
        for _ in range(max_batches):
            feed = self.client.changes(self.last_seq, limit)
            for change in feed["Changes"]:
                if change["ChangeType"] == "StableStudy":
                    outcomes.append((change["ID"], self.process(change["ID"])))
                write_json(self.state_file, {"last_seq": change["Seq"]})
            if feed.get("Done", True) or not feed["Changes"]:
                break
        return outcomes

    def process(self, study_id: str) -> str:
        """Route one study; returns and logs its outcome: ``stored``, ``skipped: …`` or ``failed: …``."""
        try:
            outcome = self._route(study_id)
        except Exception as err:  # one line per study, and the router goes on with the next
            outcome = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        logger.info("study %s: %s", study_id, outcome)
        return outcome

    def _route(self, study_id: str) -> str:
        study = self.client.study(study_id)
        tags = {**study.get("PatientMainDicomTags", {}), **study["MainDicomTags"]}
        series = [self.client.series(s) for s in study["Series"]]
        descriptions = [s["MainDicomTags"].get("SeriesDescription", "") for s in series]
        if SR_SERIES_DESCRIPTION in descriptions or PDF_SERIES_DESCRIPTION in descriptions:
            return "skipped: already holds the SBR report"
        chosen = [s for s in series if series_matches(s["MainDicomTags"])]
        if not chosen:
            return f"skipped: no SMWI series (series: {', '.join(descriptions) or 'none'})"
        smwi = min(chosen, key=lambda s: int(s["MainDicomTags"].get("SeriesNumber") or 0))
        with tempfile.TemporaryDirectory(prefix="nigral-sbr-route-") as work:
            work = Path(work)
            self.client.download_series(smwi["ID"], work / "dicom")
            command = [*self.deploy_command, "-i", str(work / "dicom"), "-o", str(work / "out")]
            if self.models is not None:
                command += ["-m", str(self.models)]
            started = time.monotonic()
            done = subprocess.run(command, env=self.env, cwd=self.cwd, capture_output=True, text=True,
                                  timeout=DEPLOY_TIMEOUT_S)  # fmt: skip
            seconds = time.monotonic() - started
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest app run so far
            if done.returncode != 0:
                lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
                errors = [line for line in lines if re.match(r"^\w*(Error|Exception|error:)", line.strip())]
                reason = (errors or lines or [""])[-1].strip()
                return f"failed: the Deploy app exited {done.returncode}: {reason}"
            for name in OUTPUTS:
                produced = pydicom.dcmread(work / "out" / name, stop_before_pixels=True)
                if produced.StudyInstanceUID != tags["StudyInstanceUID"] or produced.PatientID != tags.get(
                    "PatientID", ""
                ):
                    return f"failed: {name} belongs to another study or patient; nothing stored"
            for name in OUTPUTS:
                stored = self.client.store(work / "out" / name)
                if stored.get("ParentStudy") != study_id:
                    raise RuntimeError(f"Orthanc filed {name} under study {stored.get('ParentStudy')}")
            result = json.loads((work / "out" / "sbr_result.json").read_text())
        return (
            f"stored SR and PDF (series {smwi['MainDicomTags'].get('SeriesDescription', '')}: "
            f"SBR right {result['right']['sbr']:.2f}, left {result['left']['sbr']:.2f}; "
            f"Deploy app {seconds:.1f} s, peak RSS of app runs so far {peak_mb:.0f} MB)"
        )
