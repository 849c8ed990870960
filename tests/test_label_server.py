"""The MONAI Label server as docs/integrations/label.md starts it (label and label-server extras):
``python -m apps.label start_server`` on 127.0.0.1, ``/info/`` and ``/infer/nigral_sbr`` over HTTP with two clicks
(JSON and ``output=image``) and without clicks (the models folder's localiser), the numbers equal to
``scripts/predict.py`` on the same volume and model files, and refusals as HTTP 4xx whose body holds the one-line
reason. Also the DICOM-SEG round trip that makes the server's pydicom 3 import alias safe."""

import csv
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, bundle_env, free_port, require_extra, stop_process_group
from subjects import demo_subject, save_nifti, world, write_dicom_series

server = require_extra("apps.label.server", "label")
server.install_pydicom_alias()
require_extra("monailabel.app", "label-server")  # the server's own imports: FastAPI, uvicorn, pydicom-seg, ...

MC_SAMPLES = 20
STARTUP_S = 180  # bounded wait for /info/ (a cold start imports torch, MONAI and MONAI Label)
POLL_S = 0.5


def http(url: str, form: dict | None = None, timeout: float = 300) -> tuple[int, bytes]:
    """GET (``form`` None) or POST a urlencoded form; (status, body), also for 4xx/5xx."""
    data = None if form is None else urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """studies/ (subject01: the demo subject; slab01: a 5 mm wide slab of it, on which any localiser's two centres
    are closer than the plausible 12 mm; broken01: not an image) and app/ (a copy of apps/label, where MONAI Label
    writes its app folders). The models are the shipped ones (models/: demo regressor, calibration, localiser)."""
    root = tmp_path_factory.mktemp("label_server")
    volume, affine, right, left = demo_subject()
    (root / "studies").mkdir()
    image = save_nifti(root / "studies" / "subject01.nii.gz", volume, affine)
    slab_affine = affine.copy()
    slab_affine[:3, 3] += affine[:3, 0] * 50
    save_nifti(root / "studies" / "slab01.nii.gz", np.ascontiguousarray(volume[50:60]), slab_affine)
    (root / "studies" / "broken01.nii.gz").write_bytes(b"not an image")
    shutil.copytree(REPO / "apps" / "label", root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    return root, image, right, left


@pytest.fixture(scope="module")
def base_url(studies):
    """The documented start command on a free port of 127.0.0.1 (the default host), in its own process group; the
    URL once /info/ answers (bounded wait); stopped by its process group's id afterwards."""
    root = studies[0]
    port = free_port()
    command = [sys.executable, "-m", "apps.label", "start_server", "--app", str(root / "app"),
               "--studies", str(root / "studies"), "--port", str(port),
               "--conf", "mc_samples", str(MC_SAMPLES)]  # fmt: skip
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(command, cwd=REPO, env=bundle_env(), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        for _ in range(int(STARTUP_S / POLL_S)):  # bounded in count and in time
            if process.poll() is not None:
                pytest.fail(f"the server exited ({process.returncode}):\n{server_log(root)}", pytrace=False)
            if answers(f"{url}/info/") or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        if not answers(f"{url}/info/"):
            pytest.fail(f"no /info/ within {STARTUP_S} s:\n{server_log(root)}", pytrace=False)
        yield url
    finally:
        stop_process_group(process)
        log.close()


def answers(url: str) -> bool:
    try:
        return http(url, timeout=5)[0] == 200
    except OSError:  # not listening yet
        return False


def server_log(root: Path) -> str:
    return (root / "server.log").read_text(errors="replace")[-4000:]


def predict(studies, out: Path, *centroids: str) -> dict:
    """``scripts/predict.py`` on subject01 with its default (shipped) model files and the server's MC samples; its
    predictions.csv row."""
    image = studies[1]
    command = [sys.executable, "scripts/predict.py", "--image", image, "--mc_samples", str(MC_SAMPLES),
               "--output_dir", str(out), *centroids]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "predictions.csv") as f:
        (row,) = csv.DictReader(f)
    return row


def infer(base_url: str, image: str, params: dict | None = None, output: str = "json") -> tuple[int, bytes]:
    query = urllib.parse.urlencode({"image": image, "output": output})
    return http(f"{base_url}/infer/nigral_sbr?{query}", form={"params": json.dumps(params or {})})


def assert_equal_to_predict(result: dict, row: dict) -> None:
    assert result["research_use_only"] is True and result["mc_samples"] == MC_SAMPLES
    for side in ("right", "left"):
        low, high = result[side]["interval"]
        assert low <= result[side]["sbr"] <= high
        assert abs(result[side]["sbr"] - float(row[f"sbr_{side}"])) <= 1e-6
        assert abs(low - float(row[f"low_{side}"])) <= 1e-6 and abs(high - float(row[f"high_{side}"])) <= 1e-6
        assert result[side]["abnormal"] == (row[f"abnormal_{side}"] == "1")


def test_the_command_is_monai_labels_own_listening_on_this_machine_by_default():
    from monailabel.main import Main

    cli = server.command_line()
    assert isinstance(cli, Main)
    parser = cli.args_parser()
    assert parser.parse_args(["start_server", "--app", "a", "--studies", "s"]).host == "127.0.0.1"
    assert parser.parse_args(["start_server", "--app", "a", "--studies", "s", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert sys.modules[server.ALIASED_MODULE].SegmentationStorage == "1.2.840.10008.5.1.4.1.1.66.4"


def test_info_lists_the_model(base_url):
    status, body = http(f"{base_url}/info/", timeout=30)
    assert status == 200
    info = json.loads(body)
    model = info["models"]["nigral_sbr"]
    assert model["type"] == "classification" and model["dimension"] == 3 and "research use" in model["description"]
    assert model["labels"] == {"right nigral patch": 1, "left nigral patch": 2, "both nigral patches": 3}
    assert model["config"]["mc_samples"] == MC_SAMPLES and info["datastore"]["total"] == 3


def test_two_clicks_give_predict_pys_numbers_and_the_patch_label_on_the_volumes_grid(base_url, studies, tmp_path):
    root, image, right, left = studies
    clicks = {"foreground": [left.tolist(), right.tolist()]}  # left first: sides come from the world position
    status, body = infer(base_url, "subject01", clicks)
    assert status == 200, body[-2000:]
    result = json.loads(body)
    assert result["centroid_source"] == "clicks" and result["id"] == "subject01"
    row = predict(studies, tmp_path, "--right", *map(str, right), "--left", *map(str, left))
    assert_equal_to_predict(result, row)

    status, body = infer(base_url, "subject01", clicks, output="image")
    assert status == 200, body[-2000:]
    (tmp_path / "label.nii.gz").write_bytes(body)
    label, source = nib.load(tmp_path / "label.nii.gz"), nib.load(image)
    assert label.shape == source.shape and np.allclose(label.affine, source.affine)
    data = np.asarray(label.dataobj)
    assert set(np.unique(data)) == {0, 1, 2, 3}  # 3: where the two patches overlap
    for value, click in ((1, right), (2, left)):
        voxels = np.argwhere((data & value) > 0)
        assert len(voxels) == 50 * 50 * 20 and np.allclose(voxels.mean(axis=0), click, atol=0.6)


def test_no_clicks_use_the_shipped_localiser(base_url, studies, tmp_path):
    status, body = infer(base_url, "subject01")
    assert status == 200, body[-2000:]
    result = json.loads(body)
    row = predict(studies, tmp_path)  # no --right/--left: predict.py's localiser, the same file
    assert result["centroid_source"] == row["centroid_source"] == "localiser"
    assert_equal_to_predict(result, row)
    _, affine, right, left = demo_subject()
    for side, truth in (("right", right), ("left", left)):
        assert np.linalg.norm(np.subtract(result["centroids_world_ras"][side], world(affine, truth))) < 2.0


@pytest.mark.parametrize(
    ("image", "params", "status", "reason"),
    [
        ("slab01", None, 422, "slab01: localiser: "),
        ("subject01", {"foreground": [[37, 50, 13]]}, 422,
         "subject01: clicks: give two points (right and left nigrosome-1), got 1"),
        ("broken01", None, 422, "broken01: image: cannot read broken01.nii.gz ("),
        ("nosuch01", None, 404, "nosuch01: no such image in the studies folder"),
    ],
)  # fmt: skip
def test_refusals_are_4xx_with_the_one_line_reason(base_url, image, params, status, reason):
    got, body = infer(base_url, image, params)
    assert got == status, body[-2000:]
    detail = json.loads(body)["detail"]
    assert detail.startswith(reason) and "\n" not in detail and "Traceback" not in detail


def test_an_unknown_model_is_404_with_one_line(base_url):
    status, body = http(f"{base_url}/infer/other?image=subject01", form={"params": "{}"})
    assert status == 404 and json.loads(body)["detail"] == "other: no such model (see /info/)"


def test_model_files_the_workflow_cannot_use_are_one_line_not_a_system_exit(studies, tmp_path, monkeypatch):
    """The workflow's checks end a command with ``SystemExit`` (and shut logging down); in the server that would be
    a bare 500, so the task raises ModelFilesUnusable (HTTP 503 in the app) with the check's line."""
    import logging

    sbr_task = require_extra("apps.label.sbr_task", "label")
    monkeypatch.setattr(logging, "shutdown", lambda *_: None)  # keep the test session's log handlers open
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    task = sbr_task.SBRInferTask(models=tmp_path, mc_samples=2)
    clicks = [studies[2].tolist(), studies[3].tolist()]
    with pytest.raises(sbr_task.ModelFilesUnusable) as err:
        task({"image": studies[1], "foreground": clicks, "device": "cpu"})
    message = str(err.value)
    assert message.startswith("the inference workflow stopped: checkpoint ") and "\n" not in message


def test_dicom_seg_round_trip_under_pydicom_3_and_numpy_2_is_identical(tmp_path):
    """MONAI Label's own DICOM-SEG conversions (pydicom-seg's MultiClassWriter and MultiClassReader) and
    pydicom-seg's SegmentReader, through the alias: the mask comes back identical, on the same grid."""
    import pydicom
    import pydicom_seg
    import SimpleITK as sitk
    from monailabel.datastore.utils.convert import dicom_seg_to_itk_image, nifti_to_dicom_seg

    assert int(pydicom.__version__.split(".")[0]) >= 3 and int(np.__version__.split(".")[0]) >= 2
    volume = (np.arange(12 * 10 * 5).reshape(12, 10, 5) % 97).astype(np.int16)
    affine = np.diag([0.5, 0.6, 1.2, 1.0])
    affine[:3, 3] = [-3.0, -2.0, -1.0]
    series = write_dicom_series(tmp_path / "mr", volume, affine, seed=1)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    mr = reader.Execute()
    labels = np.zeros(sitk.GetArrayFromImage(mr).shape, np.uint8)  # [z, y, x]
    labels[1:3, 2:6, 3:8] = 1
    labels[3:5, 4:8, 1:4] = 2
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(mr)
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))

    seg_file = nifti_to_dicom_seg(str(series), str(tmp_path / "mask.nii.gz"), [{"name": "right"}, {"name": "left"}],
                                  use_itk=False)  # fmt: skip
    seg = pydicom.dcmread(seg_file)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage and len(seg.SegmentSequence) == 2
    back = sitk.ReadImage(dicom_seg_to_itk_image(seg_file))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    for got, want in ((back.GetOrigin(), mr.GetOrigin()), (back.GetSpacing(), mr.GetSpacing()),
                      (back.GetDirection(), mr.GetDirection())):  # fmt: skip
        np.testing.assert_allclose(got, want, atol=1e-4)
    segments = pydicom_seg.SegmentReader().read(seg)
    assert sorted(segments.available_segments) == [1, 2]
    for value in (1, 2):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(segments.segment_image(value)), labels == value)
