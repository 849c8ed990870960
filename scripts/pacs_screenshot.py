"""The figure of docs/integrations/pacs.md: Orthanc's own web explorer showing a routed synthetic study, the SR and
PDF series beside the SMWI series, captured with headless Chromium (Debian's ``chromium``).

Starts a throw-away Orthanc with the project's configuration, sends one wide-field synthetic SMWI study, routes it
(the Deploy app, 20 MC samples), then opens the study page of Orthanc Explorer. This Orthanc has authentication
off (loopback only, synthetic data, deleted afterwards) because Chromium does not send the credentials of a
``user:password@`` URL with the explorer's own requests. Usage (repository root)::

    python scripts/pacs_screenshot.py [--out docs/figures/orthanc_study.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from subjects import same_study, study_attributes, write_dicom_series  # noqa: E402  (the test suite's DICOM series writer)

from apps.pacs.client import OrthancClient  # noqa: E402
from apps.pacs.orthanc import start_orthanc, stop_process_group, write_config  # noqa: E402
from apps.pacs.router import StudyRouter  # noqa: E402
from bundle.synthetic import smwi_cohort  # noqa: E402

ATTRIBUTES = study_attributes("SYNTHETIC^DEMO", "SYN-0001", "A1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "figures" / "orthanc_study.png"))
    parser.add_argument("--port", type=int, default=18743)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        parser.error("no chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = write_config(tmp / "orthanc", args.port, "unused", "unused", stable_age_s=2)
        settings = json.loads(config.read_text())
        settings["AuthenticationEnabled"] = False
        config.write_text(json.dumps(settings))
        orthanc = start_orthanc(config, tmp / "orthanc.log")
        client = OrthancClient(f"http://127.0.0.1:{args.port}", ("unused", "unused"))
        try:
            if not client.wait_ready():
                raise RuntimeError(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-2000:]}")
            subject = smwi_cohort.simulate_subject(4.0, 2.5, np.random.default_rng(2026), smwi_cohort.WIDE_FIELD)
            folder = write_dicom_series(tmp / "smwi", subject.volume, subject.affine, seed=1,
                                        attributes={**ATTRIBUTES, "SeriesDescription": "SMWI axial",
                                                    "SeriesNumber": 5})  # fmt: skip
            same_study(sorted(folder.glob("*.dcm")))
            for path in sorted(folder.glob("*.dcm")):
                client.store(path)
            env = dict(os.environ, PYTHONPATH=str(REPO), NIGRAL_SBR_MC_SAMPLES="20")
            deploy = [str(REPO / ".venv-deploy" / "bin" / "python"), "-m", "apps.deploy"]
            router = StudyRouter(client, tmp / "state.json", deploy, env=env, cwd=REPO)
            for _ in range(120):
                outcomes = router.poll()
                if outcomes:
                    print(outcomes)
                    break
                time.sleep(1)
            (study,) = client.get("/studies")
            url = f"{client.url}/app/explorer.html#study?uuid={study}"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1280,720", "--virtual-time-budget=8000", f"--screenshot={args.out}", url],
                           check=True, capture_output=True, timeout=120)  # fmt: skip
        finally:
            stop_process_group(orthanc, grace_s=60)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
