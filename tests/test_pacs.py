"""The PACS loop with a real Orthanc (Debian's orthanc and orthanc-dicomweb; .ci/run installs them): studies arrive,
the study router runs the Deploy app on each stable SMWI study and stores its DICOM SR and Encapsulated PDF back into
the same study. Orthanc listens on 127.0.0.1 with authentication, starts with a bounded wait and is stopped by its
process group; every polling loop is bounded in count and time."""

import csv
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from conftest import REPO, bundle_env, dciodvfy_errors, free_port, require_extra, stop_process_group
from subjects import study_attributes, write_dicom_series

from apps.pacs.client import OrthancClient, credentials
from apps.pacs.orthanc import ORTHANC, write_config
from apps.pacs.router import StudyRouter
from bundle.serving.dicom_pdf import ENCAPSULATED_PDF, PDF_SERIES_DESCRIPTION
from bundle.serving.dicom_sr import SR_SERIES_DESCRIPTION, read_sbr_report
from bundle.synthetic import smwi_cohort

DEPLOY_PYTHON = Path(os.environ.get("NIGRAL_SBR_DEPLOY_PYTHON", REPO / ".venv-deploy" / "bin" / "python"))
MC_SAMPLES = "20"
USER, PASSWORD = "router", "synthetic-only-secret"
STARTUP_S, ROUTE_S = 60, 300


def require(path: str | Path, what: str) -> None:
    if Path(path).exists() or shutil.which(str(path)):
        return
    message = f"{what} missing ({path}): apt-get install orthanc orthanc-dicomweb dicom3tools dcmtk"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def write_study(folder: Path, attributes: dict, seed: int, t1: bool = False, corrupt: bool = False) -> Path:
    """A wide-field synthetic SMWI series (and a T1 series) of one patient, all in one study."""
    subject = smwi_cohort.simulate_subject(4.0, 2.5, np.random.default_rng(seed), smwi_cohort.WIDE_FIELD)
    write_dicom_series(folder / "smwi", subject.volume, subject.affine, seed=seed,
                       attributes={**attributes, "SeriesDescription": "SMWI axial", "SeriesNumber": 5})  # fmt: skip
    if t1:
        write_dicom_series(folder / "t1", subject.volume[::-1].copy(), subject.affine, seed=seed + 1,
                           attributes={**attributes, "SeriesDescription": "T1 MPRAGE", "SeriesNumber": 2})  # fmt: skip
    uid = pydicom.uid.generate_uid()
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = uid
        if corrupt and "smwi" in path.parts:
            ds.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]  # rows and columns parallel: no volume can be built
        ds.save_as(path)
    return folder


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc with the project's configuration on a free loopback port; (client, root); stopped by its process
    group after the module."""
    require(ORTHANC, "Orthanc")
    root = tmp_path_factory.mktemp("pacs")
    port = free_port()
    config = write_config(root / "orthanc", port, USER, PASSWORD, stable_age_s=2)
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    log = open(root / "orthanc.log", "ab")
    process = subprocess.Popen([ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = OrthancClient(f"http://127.0.0.1:{port}", (USER, PASSWORD))
    try:
        ready = client.wait_ready(STARTUP_S)  # bounded wait
        assert ready and process.poll() is None, (root / "orthanc.log").read_text()[-3000:]
        yield client, root
    finally:
        stop_process_group(process)
        log.close()


def make_router(client: OrthancClient, state: Path) -> StudyRouter:
    require(DEPLOY_PYTHON, "the Deploy environment (bash apps/deploy/make_env.sh)")
    env = dict(bundle_env(), NIGRAL_SBR_MC_SAMPLES=MC_SAMPLES)
    return StudyRouter(client, state, [str(DEPLOY_PYTHON), "-m", "apps.deploy"], env=env, cwd=REPO)


@pytest.fixture(scope="module")
def routed(pacs, tmp_path_factory):
    """Three studies arriving interleaved (patient A: SMWI + T1; patient B: SMWI; patient C: an SMWI series whose
    orientation tags make no volume), then the router until each has an outcome; (client, outcomes, folders)."""
    client, root = pacs
    data = tmp_path_factory.mktemp("studies")
    folders = {
        "A": write_study(data / "A", study_attributes("SYNTHETIC^A", "SYN-A", "ACC11"), 11, t1=True),
        "B": write_study(data / "B", study_attributes("SYNTHETIC^B", "SYN-B", "ACC12"), 12),
        "C": write_study(data / "C", study_attributes("SYNTHETIC^C", "SYN-C", "ACC13"), 13, corrupt=True),
    }
    files = {key: sorted(folder.rglob("*.dcm")) for key, folder in folders.items()}
    for batch in itertools.zip_longest(*files.values()):  # interleaved arrival: A, B, C, A, B, C, ...
        for path in filter(None, batch):
            client.store(path)
    router = make_router(client, root / "state.json")
    outcomes: dict[str, list[str]] = {}  # every outcome per study: a study stable again later is skipped then
    deadline = time.monotonic() + ROUTE_S
    for _ in range(200):  # bounded in count and time
        for study_id, outcome in router.poll():
            outcomes.setdefault(study_id, []).append(outcome)
        n_stored = sum(any(o.startswith("stored") for o in seen) for seen in outcomes.values())
        if (n_stored == 2 and len(outcomes) == 3) or time.monotonic() > deadline:
            break
        time.sleep(1)
    return client, outcomes, folders


def study_of(client: OrthancClient, patient_id: str) -> dict:
    (study,) = [client.study(s) for s in client.get("/studies") if
                client.study(s)["PatientMainDicomTags"]["PatientID"] == patient_id]  # fmt: skip
    return study


def series_by_description(client: OrthancClient, study: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for series_id in study["Series"]:
        series = client.series(series_id)
        found.setdefault(series["MainDicomTags"].get("SeriesDescription", ""), []).append(series)
    return found


def instance_file(client: OrthancClient, series: dict, path: Path) -> Path:
    (instance,) = series["Instances"]
    response = client.session.get(f"{client.url}/instances/{instance}/file", timeout=60)
    response.raise_for_status()
    path.write_bytes(response.content)
    return path


def dicomweb(client: OrthancClient):
    """dicomweb-client on Orthanc's DICOMweb root, with the same credentials."""
    require_extra("dicomweb_client", "label-server")
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    return DICOMwebClient(url=f"{client.url}/dicom-web", session=create_session_from_user_pass(USER, PASSWORD))


def test_each_study_gets_one_sr_and_one_pdf_of_its_own_patient(routed, tmp_path):
    client, outcomes, _ = routed
    stored = [study for study, seen in outcomes.items() if any(o.startswith("stored") for o in seen)]
    assert len(stored) == 2 and all(sum(o.startswith("stored") for o in outcomes[s]) == 1 for s in stored), outcomes
    for pid in ("SYN-A", "SYN-B"):
        study = study_of(client, pid)
        series = series_by_description(client, study)
        assert len(series[SR_SERIES_DESCRIPTION]) == 1 and len(series[PDF_SERIES_DESCRIPTION]) == 1, series.keys()
        sr = pydicom.dcmread(instance_file(client, series[SR_SERIES_DESCRIPTION][0], tmp_path / f"{pid}_sr.dcm"))
        pdf = pydicom.dcmread(instance_file(client, series[PDF_SERIES_DESCRIPTION][0], tmp_path / f"{pid}.dcm"))
        smwi_uid = series["SMWI axial"][0]["MainDicomTags"]["SeriesInstanceUID"]
        for ds in (sr, pdf):
            assert ds.PatientID == pid and ds.StudyInstanceUID == study["MainDicomTags"]["StudyInstanceUID"]
        evidence = {s.SeriesInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                    for s in e.ReferencedSeriesSequence}  # fmt: skip
        assert evidence == {smwi_uid}, "the SR must reference its own study's SMWI series only"
        assert pdf.SOPClassUID == ENCAPSULATED_PDF and pdf.EncapsulatedDocument.startswith(b"%PDF")
        assert pdf.SourceInstanceSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID
        # the same through DICOMweb (QIDO-RS, WADO-RS), as a viewer or another PACS reads it
        web = dicomweb(client)
        modalities = sorted(pydicom.Dataset.from_json(s).Modality for s in web.search_for_series(sr.StudyInstanceUID))
        assert modalities == ["DOC", "MR", "SR"] if pid == "SYN-B" else ["DOC", "MR", "MR", "SR"], modalities
        fetched = web.retrieve_instance(sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID)
        assert fetched.SOPInstanceUID == sr.SOPInstanceUID and fetched.PatientID == pid


def test_the_srs_numbers_equal_predict_py_on_the_same_series(routed, tmp_path):
    client, _, folders = routed
    for pid, key in (("SYN-A", "A"), ("SYN-B", "B")):
        series = series_by_description(client, study_of(client, pid))
        report = read_sbr_report(instance_file(client, series[SR_SERIES_DESCRIPTION][0], tmp_path / f"{key}.dcm"))
        out = tmp_path / f"predict_{key}"
        command = [sys.executable, "scripts/predict.py", "--image", str(folders[key] / "smwi"), "--mc_samples",
                   MC_SAMPLES, "--output_dir", str(out)]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        with open(out / "predictions.csv") as f:
            (row,) = csv.DictReader(f)
        for side in ("right", "left"):
            assert abs(report[side]["sbr"] - float(row[f"sbr_{side}"])) <= 1e-6
            assert abs(report[side]["low"] - float(row[f"low_{side}"])) <= 1e-6
            assert abs(report[side]["high"] - float(row[f"high_{side}"])) <= 1e-6


def test_a_bad_series_is_one_line_and_the_others_go_on(routed, caplog):
    client, outcomes, _ = routed
    study_c = study_of(client, "SYN-C")
    assert outcomes[study_c["ID"]] and all(o.startswith("failed: ") and "\n" not in o for o in outcomes[study_c["ID"]])
    assert set(series_by_description(client, study_c)) == {"SMWI axial"}  # nothing stored for it


def test_a_restarted_router_stores_nothing_new(routed, pacs, caplog):
    client, _, _ = routed
    before = len(client.get("/instances"))
    again = make_router(client, pacs[1] / "state.json")  # same state: at most the studies made stable again
    assert all(outcome.startswith("skipped") for _, outcome in again.poll())  # by the stored results
    fresh = make_router(client, pacs[1] / "lost_state.json")  # state lost: the stored SR is the marker
    with caplog.at_level(logging.INFO):
        outcomes = dict(fresh.poll())
    stored = [o for o in outcomes.values() if o.startswith("stored")]
    assert not stored, outcomes
    assert sum(o == "skipped: already holds the SBR report" for o in outcomes.values()) == 2
    assert len(client.get("/instances")) == before


def test_the_stored_sr_and_pdf_pass_dciodvfy_and_the_sr_renders(routed, tmp_path):
    require("dciodvfy", "dicom3tools")
    require("dsrdump", "dcmtk")
    client, _, _ = routed
    series = series_by_description(client, study_of(client, "SYN-A"))
    for description in (SR_SERIES_DESCRIPTION, PDF_SERIES_DESCRIPTION):
        path = instance_file(client, series[description][0], tmp_path / "x.dcm")
        errors = dciodvfy_errors(path)
        assert not errors, errors
        if description == SR_SERIES_DESCRIPTION:
            dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
            assert dump.returncode == 0 and "SBR from SMWI" in dump.stdout


def test_credentials_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ORTHANC_USERNAME", raising=False)
    monkeypatch.delenv("ORTHANC_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="no Orthanc credentials"):
        credentials(None)
    (tmp_path / "cred").write_text("site:pw\n")
    assert credentials(tmp_path / "cred") == ("site", "pw")
    (tmp_path / "bad").write_text("no-colon\n")
    with pytest.raises(ValueError, match="expected one line user:password"):
        credentials(tmp_path / "bad")
    monkeypatch.setenv("ORTHANC_USERNAME", "env")
    monkeypatch.setenv("ORTHANC_PASSWORD", "pw2")
    assert credentials(tmp_path / "cred") == ("env", "pw2")


def test_orthanc_refuses_a_request_without_credentials(pacs):
    client, _ = pacs
    assert requests.get(f"{client.url}/system", timeout=10).status_code == 401
    assert json.loads(json.dumps(client.get("/system")))["Name"] == "nigral-sbr-pacs"


def test_monai_label_infers_on_the_orthanc_held_study(pacs, tmp_path):
    """The radiologist's route: MONAI Label with Orthanc as its DICOMweb datastore (``--studies .../dicom-web``,
    credentials from the environment); /infer on the SMWI series without clicks (the shipped localiser) and with two
    clicks gives the SBRs and intervals of ``scripts/predict.py`` on the same series (|Δ| ≤ 1e-6)."""
    require_extra("apps.label.server", "label").install_pydicom_alias()
    require_extra("monailabel.app", "label-server")  # the server's own imports
    client, _ = pacs
    subject = smwi_cohort.simulate_subject(4.2, 2.1, np.random.default_rng(21), smwi_cohort.WIDE_FIELD)
    series = write_dicom_series(tmp_path / "smwi", subject.volume, subject.affine, seed=21,
                                attributes={**study_attributes("SYNTHETIC^L", "SYN-L", "ACC21"),
                                            "SeriesDescription": "SMWI axial"})  # fmt: skip
    for path in sorted(series.glob("*.dcm")):
        client.store(path)
    series_uid = pydicom.dcmread(next(series.glob("*.dcm"))).SeriesInstanceUID
    shutil.copytree(REPO / "apps" / "label", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    env = dict(bundle_env(), MONAI_LABEL_DICOMWEB_USERNAME=USER, MONAI_LABEL_DICOMWEB_PASSWORD=PASSWORD,
               MONAI_LABEL_DICOMWEB_CACHE_PATH=str(tmp_path / "cache"))  # fmt: skip
    command = [sys.executable, "-m", "apps.label", "start_server", "--app", str(tmp_path / "app"), "--studies",
               f"{client.url}/dicom-web", "--port", str(port), "--conf", "mc_samples", MC_SAMPLES]  # fmt: skip
    log = open(tmp_path / "label.log", "wb")
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        for _ in range(720):  # bounded in count and time
            if server.poll() is not None or time.monotonic() > deadline:
                break
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.25)
        assert server.poll() is None, (tmp_path / "label.log").read_text()[-3000:]

        def infer(clicks: dict) -> dict:
            answer = requests.post(f"{url}/infer/nigral_sbr", params={"image": series_uid, "output": "json"},
                                   data={"params": json.dumps(clicks)}, timeout=300)  # fmt: skip
            assert answer.status_code == 200, answer.text[-2000:]
            return answer.json()

        def predict(*centroids: str) -> dict:
            out = tmp_path / f"predict{len(centroids)}"
            done = subprocess.run([sys.executable, "scripts/predict.py", "--image", str(series), "--mc_samples",
                                   MC_SAMPLES, "--output_dir", str(out), *centroids], cwd=REPO, env=bundle_env(),
                                  capture_output=True, text=True, timeout=300)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            with open(out / "predictions.csv") as f:
                (row,) = csv.DictReader(f)
            return row

        def same(result: dict, row: dict) -> None:
            for side in ("right", "left"):
                assert abs(result[side]["sbr"] - float(row[f"sbr_{side}"])) <= 1e-6
                low, high = result[side]["interval"]
                assert abs(low - float(row[f"low_{side}"])) <= 1e-6 and abs(high - float(row[f"high_{side}"])) <= 1e-6

        result = infer({})
        assert result["centroid_source"] == "localiser"
        same(result, predict())
        (converted,) = (tmp_path / "cache").rglob("*.nii.gz")  # the volume MONAI Label made of the series
        to_voxel = np.linalg.inv(nib.load(converted).affine)
        worlds = {side: subject.affine @ [*getattr(subject, f"centroid_{side}"), 1.0] for side in ("right", "left")}
        clicks = [(to_voxel @ worlds[side])[:3].tolist() for side in ("left", "right")]
        result = infer({"foreground": clicks})
        assert result["centroid_source"] == "clicks"
        world_args = [str(v) for side in ("right", "left") for v in (f"--{side}", *map(str, worlds[side][:3]))]
        same(result, predict(*world_args, "--space", "world"))
    finally:
        stop_process_group(server)
        log.close()
