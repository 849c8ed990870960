"""The MONAI Deploy application end to end on a synthetic DICOM study (deploy extra, in its own environment).

The app runs in the environment ``apps/deploy/make_env.sh`` makes (``.venv-deploy``, or ``NIGRAL_SBR_DEPLOY_PYTHON``);
``.ci/run`` makes it, and under CI a missing environment is a failure, not a skip.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import REPO, bundle_env, dciodvfy_errors
from PIL import Image
from subjects import demo_subject, tiny_model, write_dicom_series

DEPLOY_PYTHON = Path(os.environ.get("NIGRAL_SBR_DEPLOY_PYTHON", REPO / ".venv-deploy" / "bin" / "python"))
STUDY = {"PatientName": "SYNTHETIC^DEMO", "PatientID": "SYN-0001", "PatientBirthDate": "19500101",
         "PatientSex": "O", "StudyDate": "20261123", "StudyTime": "120000", "StudyID": "1", "AccessionNumber": "A1",
         "ReferringPhysicianName": "", "StudyDescription": "synthetic midbrain MRI"}  # fmt: skip


def deploy_python() -> Path:
    if DEPLOY_PYTHON.exists():
        return DEPLOY_PYTHON
    message = f"no MONAI Deploy environment at {DEPLOY_PYTHON}: run bash apps/deploy/make_env.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A DICOM study with the SMWI series and a T1 series the selection rules must pass over; a tiny model with a
    non-trivial output; the true centroids as a side file (world coordinates)."""
    root = tmp_path_factory.mktemp("deploy")
    volume, affine, right, left = demo_subject()
    write_dicom_series(root / "dicom" / "smwi", volume, affine, seed=1,
                       attributes={**STUDY, "SeriesDescription": "SMWI axial", "SeriesNumber": 5})  # fmt: skip
    write_dicom_series(root / "dicom" / "t1", volume[::-1].copy(), affine, seed=2,
                       attributes={**STUDY, "SeriesDescription": "T1 MPRAGE", "SeriesNumber": 2})  # fmt: skip
    study_uid = {pydicom.dcmread(p).StudyInstanceUID for p in (root / "dicom").rglob("*.dcm")}
    assert len(study_uid) == 2  # the writer gives each series its own study; make it one study
    uid = study_uid.pop()
    for path in (root / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = uid
        ds.save_as(path)
    tiny_model(root / "models" / "model.pt")
    world = {side: [float(v) for v in (affine @ [*c, 1.0])[:3]] for side, c in (("right", right), ("left", left))}
    centroids = {"centroid_right": world["right"], "centroid_left": world["left"], "centroid_space": "world"}
    (root / "centroids.json").write_text(json.dumps(centroids))
    return root


@pytest.fixture(scope="module")
def app_output(study):
    out = study / "out"
    env = dict(bundle_env(), NIGRAL_SBR_CENTROIDS=str(study / "centroids.json"), NIGRAL_SBR_MC_SAMPLES="20")
    cmd = [str(deploy_python()), "-m", "apps.deploy", "-i", str(study / "dicom"), "-o", str(out), "-m",
           str(study / "models")]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


def sr_measurements(path: Path) -> dict[str, dict]:
    """Per tracking identifier: the SBR NUM item's value, its uncertainties and normality, read with pydicom."""

    def items(sequence):
        for item in sequence:
            yield item
            yield from items(getattr(item, "ContentSequence", []))

    def meaning(item):
        return item.ConceptNameCodeSequence[0].CodeMeaning

    def number(item):
        return float(item.MeasuredValueSequence[0].NumericValue)

    found = {}
    for group in items(pydicom.dcmread(path).ContentSequence):
        if group.ValueType == "CONTAINER" and meaning(group) == "Measurement Group":
            side = next(i.TextValue for i in group.ContentSequence if meaning(i) == "Tracking Identifier")
            (sbr,) = [i for i in group.ContentSequence if i.ValueType == "NUM"]
            value = number(sbr)
            extra = {meaning(i): i for i in sbr.ContentSequence}
            found[side] = {
                "sbr": value,
                "high": value + number(extra["+, range of upper measurement uncertainty"]),
                "low": value - number(extra["-, range of lower measurement uncertainty"]),
                "abnormal": extra["Normality"].ConceptCodeSequence[0].CodeMeaning == "Abnormal",
            }
    return found


def test_sr_sbrs_equal_the_bundles_predictions_for_the_same_series(study, app_output, tmp_path):
    centroids = json.loads((study / "centroids.json").read_text())
    cmd = [sys.executable, "scripts/predict.py", "--image", str(study / "dicom" / "smwi"),
           "--right", *map(str, centroids["centroid_right"]), "--left", *map(str, centroids["centroid_left"]),
           "--space", "world", "--ckpt", str(study / "models" / "model.pt"), "--mc-samples", "20",
           "--output-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "predictions.csv") as f:
        (row,) = csv.DictReader(f)
    report = sr_measurements(app_output / "sbr_sr.dcm")
    assert set(report) == {"right", "left"}
    for side in ("right", "left"):
        assert report[side]["sbr"] == pytest.approx(float(row[f"sbr_{side}"]), abs=1e-6)
        assert report[side]["low"] == pytest.approx(float(row[f"low_{side}"]), abs=1e-5)
        assert report[side]["high"] == pytest.approx(float(row[f"high_{side}"]), abs=1e-5)
        assert report[side]["abnormal"] == (row[f"abnormal_{side}"] == "1")
    assert 1.0 < float(row["sbr_right"]) < 6.0 and float(row["sbr_right"]) != float(row["sbr_left"])


def test_sr_belongs_to_the_patient_and_references_the_smwi_series_only(study, app_output):
    sr = pydicom.dcmread(app_output / "sbr_sr.dcm")
    smwi = pydicom.dcmread(next((study / "dicom" / "smwi").glob("*.dcm")))
    assert sr.Modality == "SR" and sr.PatientID == "SYN-0001" and sr.StudyInstanceUID == smwi.StudyInstanceUID
    assert "RESEARCH USE ONLY" in sr.SeriesDescription
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert evidence.SeriesInstanceUID == smwi.SeriesInstanceUID
    assert len(evidence.ReferencedSOPSequence) == len(list((study / "dicom" / "smwi").glob("*.dcm")))


def test_json_png_and_pdf_reports(app_output):
    result = json.loads((app_output / "sbr_result.json").read_text())
    assert result["research_use_only"] is True and result["selection"] == "SMWI" and result["id"] == "SYN-0001_S5"
    assert result["centroid_source"] == "annotated" and result["mc_samples"] == 20
    for side in ("right", "left"):
        low, high = result[side]["interval"]
        assert low <= result[side]["sbr"] <= high
        assert result[side]["abnormal"] == (result[side]["sbr"] < result[side]["abnormal_below"])
    assert Image.open(app_output / "sbr_report.png").size[0] > 500
    pdf = (app_output / "sbr_report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Page" in pdf
    assert np.isfinite(result["right"]["sbr"])


def test_make_env_works_from_inside_a_virtual_environment(tmp_path):
    """A user's venv (no system packages) runs make_env.sh: the Deploy environment sees that venv's packages, not
    only the base interpreter's (``python -m venv --system-site-packages`` alone gives the base's)."""
    user = tmp_path / "user-venv"
    subprocess.run([sys.executable, "-m", "venv", str(user)], check=True, timeout=120)
    site = subprocess.run([user / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "user_venv_marker.py").write_text("WHERE = 'the user venv'\n")
    env = dict(os.environ, PATH=f"{user / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(user))
    made = tmp_path / "deploy-env"
    done = subprocess.run(["bash", "apps/deploy/make_env.sh", str(made)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    probe = "import user_venv_marker, monai.deploy, highdicom; print(user_venv_marker.WHERE)"
    seen = subprocess.run([made / "bin" / "python", "-c", probe], capture_output=True, text=True, timeout=120)
    assert seen.returncode == 0 and seen.stdout.strip() == "the user venv", seen.stderr[-2000:]


def test_the_apps_sr_and_encapsulated_pdf_pass_dciodvfy(app_output):
    """David Clunie's IOD verifier (Debian's dicom3tools) finds no error in either DICOM file the app writes."""
    if shutil.which("dciodvfy") is None:
        message = "dciodvfy missing: apt-get install dicom3tools"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    for name in ("sbr_sr.dcm", "sbr_report_pdf.dcm"):
        errors = dciodvfy_errors(app_output / name)
        assert not errors, (name, errors)
    pdf = pydicom.dcmread(app_output / "sbr_report_pdf.dcm")
    sr = pydicom.dcmread(app_output / "sbr_sr.dcm")
    assert pdf.StudyInstanceUID == sr.StudyInstanceUID and pdf.PatientID == sr.PatientID
    assert pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength] == (app_output / "sbr_report.pdf").read_bytes()


ANONYMISED_SR_AND_PDF = """
import sys
from pathlib import Path
import pydicom
from PIL import Image
from bundle.serving.dicom_pdf import encapsulate_pdf
from bundle.serving.dicom_sr import read_sbr_report, write_sbr_report
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
evidence = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
assert all("PatientBirthDate" not in ds for ds in evidence)
summary = {side: {"sbr": sbr, "interval": [sbr - 0.5, sbr + 0.5], "abnormal": sbr < 2.0, "abnormal_below": 2.0}
           for side, sbr in (("right", 3.25), ("left", 1.5))}
sr_path = write_sbr_report(summary, evidence, out / "sr.dcm", "test")
assert read_sbr_report(sr_path)["left"] == {"sbr": 1.5, "low": 1.0, "high": 2.0, "abnormal": True}
sr = pydicom.dcmread(sr_path)
assert sr.PatientID == "ANON" and sr.PatientBirthDate == ""
Image.new("RGB", (20, 10), "white").save(out / "report.pdf", format="PDF")
pdf = pydicom.dcmread(encapsulate_pdf(out / "report.pdf", sr, out / "pdf.dcm"))
assert pdf.StudyInstanceUID == sr.StudyInstanceUID and pdf.Modality == "DOC"
assert pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength] == (out / "report.pdf").read_bytes()
try:
    encapsulate_pdf(sr_path, sr, out / "bad.dcm")
    raise SystemExit("a non-PDF was encapsulated")
except ValueError as err:
    assert "not a PDF file" in str(err)
print("ok")
"""


def test_an_anonymised_series_without_birth_date_still_gets_an_sr_and_a_pdf(tmp_path):
    """Type 2 attributes the evidence lacks (no birth date, no study date) are written empty; the SR and the
    Encapsulated PDF read back (in the app's environment, which has highdicom)."""
    volume, affine, _, _ = demo_subject()
    folder = write_dicom_series(tmp_path / "anon", volume[:, :, :3], affine, attributes={"PatientID": "ANON"})
    done = subprocess.run([str(deploy_python()), "-c", ANONYMISED_SR_AND_PDF, str(folder), str(tmp_path)], cwd=REPO,
                          env=bundle_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
