"""Inference, calibration and TorchScript export through the bundle configs (the README's output files)."""

import csv
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import REPO, bundle_env, require_extra, workflow_configs
from ignite.engine import Engine
from monai.bundle import ConfigParser, run

from bundle.data import SBRUnitsd, load_cases
from bundle.handlers.writers import PredictionWriter
from bundle.method.networks import SymmetricRegressor, VGGRegressor3D
from bundle.method.uncertainty import GAUSSIAN_95, IntervalSettings
from bundle.workflows.checkpoints import read_checkpoint

TINY = "[4,4,4,4]"
COLUMNS = (
    "id,sbr_right,sbr_left,sigma_right,sigma_left,sigma_sym,low_right,high_right,low_left,high_left,"
    "abnormal_right,abnormal_left,interval_kind,nominal_coverage,centroid_source"
).split(",")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cohort):
    """A tiny model trained for 2 epochs on the tiny cohort with the real training command."""
    out = tmp_path_factory.mktemp("trained")
    cmd = [
        sys.executable, "-m", "bundle", "run", "training", "--config_file", "configs/train.json",
        "--num_epochs", "2", "--network_def#channels", TINY, "--output_dir", str(out / "train"),
        "--ckpt_path", str(out / "model.pt"), "--dataset_dir", str(tiny_cohort), "--learning_rate", "0.001",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def run_config(workflow: str, tiny_cohort, **overrides):
    run(
        workflow, config_file=workflow_configs(workflow), meta_file=str(REPO / "configs" / "metadata.json"),
        bundle_root=str(REPO), dataset_dir=str(tiny_cohort),
        **{"network_def#channels": [4, 4, 4, 4], "mc_samples": 20, "reports": False, **overrides},
    )  # fmt: skip


def read_rows(path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_inference_writes_the_design_files(trained, tiny_cohort, tmp_path, capsys):
    out = tmp_path / "inf"
    run_config("inference", tiny_cohort, ckpt_path=str(trained / "model.pt"), output_dir=str(out),
               reports=True)  # fmt: skip
    assert "WARNING - UNCALIBRATED intervals: symmetric MC dropout, uncalibrated" in capsys.readouterr().out
    rows = read_rows(out / "predictions.csv")
    test_ids = [c["id"] for c in json.loads((tiny_cohort / "datalist.json").read_text())["test"]]
    assert [r["id"] for r in rows] == test_ids
    assert list(rows[0]) == COLUMNS
    for r in rows:
        low, mid, high = float(r["low_right"]), float(r["sbr_right"]), float(r["high_right"])
        assert low <= mid <= high and float(r["sigma_right"]) >= 0
        assert r["abnormal_right"] == str(int(mid < 3.401))
    assert read_rows(out / "errors.csv") == []
    patient = json.loads((out / "patients" / f"{test_ids[0]}.json").read_text())
    assert patient["mc_samples"] == 20 and patient["true_sbr_right"] is not None
    assert "uncalibrated" in patient["intervals"]["description"] and patient["intervals"]["kind"] == "uncalibrated"
    assert {(r["interval_kind"], r["nominal_coverage"]) for r in rows} == {("uncalibrated", "")}
    assert (out / "patients" / f"{test_ids[0]}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_intervals_and_deterministic_mode(trained, tiny_cohort, tmp_path):
    ckpt = str(trained / "model.pt")
    for name in ("a", "b"):
        run_config("inference", tiny_cohort, ckpt_path=ckpt, output_dir=str(tmp_path / name))
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()
    run_config("inference", tiny_cohort, ckpt_path=ckpt, output_dir=str(tmp_path / "d"), mc_samples=0, amp=False)
    rows = read_rows(tmp_path / "d" / "predictions.csv")
    assert all(r["sigma_right"] == "" and r["low_left"] == "" and r["sbr_right"] != "" for r in rows)
    # deterministic prediction = the eval-mode network on the preprocessed pair, times sbr_max
    parser = ConfigParser()
    parser.read_config(workflow_configs("inference"))
    parser.update({"bundle_root": str(REPO), "dataset_dir": str(tiny_cohort), "ckpt_path": ckpt})  # its sbr_max
    preprocessing = parser.get_parsed_content("preprocessing")
    record = read_checkpoint(ckpt)
    net = SymmetricRegressor(record.load_into(VGGRegressor3D(**record.network), "cpu"))
    cases = {c["id"]: c for c in load_cases(tiny_cohort / "datalist.json", "test", tiny_cohort)}
    with torch.no_grad():
        for row in rows:
            pair = preprocessing(dict(cases[row["id"]]))["image"][None]
            expected = net(pair)[0].double() * 6.84
            assert float(row["sbr_right"]) == pytest.approx(float(expected[0]), abs=6e-5)
            assert float(row["sbr_left"]) == pytest.approx(float(expected[1]), abs=6e-5)


def test_calibration_then_inference_uses_it(trained, tiny_cohort, tmp_path):
    ckpt = trained / "calibrated" / "model.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes((trained / "model.pt").read_bytes())
    # the tiny cohort has 2 validation cases: calibrate on its 11 training cases for an 80 % target instead
    run_config("calibrate", tiny_cohort, ckpt_path=str(ckpt), section="training", coverage=0.8)
    calibration = json.loads((ckpt.parent / "calibration.json").read_text())
    assert set(calibration) >= {"gamma_r", "gamma_l", "scale", "coverage", "modes"}
    assert 0 <= calibration["gamma_r"] <= 1 and calibration["coverage"] == 0.8
    assert calibration["modes"]["symmetric"]["validation_coverage_r"] >= 0.8
    assert calibration["modes"]["mc"]["gamma_r"] == 0.0
    out = tmp_path / "inf"
    run_config("inference", tiny_cohort, ckpt_path=str(ckpt), output_dir=str(out))
    patient = next((out / "patients").glob("*.json"))
    intervals = json.loads(patient.read_text())["intervals"]
    assert "calibrated to 80% coverage" in intervals["description"]
    assert intervals["scale_r"] == pytest.approx(calibration["scale"]["right"])
    assert (intervals["kind"], intervals["coverage"]) == ("calibrated", 0.8)
    assert {(r["interval_kind"], r["nominal_coverage"]) for r in read_rows(out / "predictions.csv")} == {
        ("calibrated", "0.8")
    }


def test_prediction_writer_by_hand(tmp_path):
    """Fixed MC samples of one patient (normalised, through the SBR-unit postprocessing) -> intervals of eq. 10
    (Algorithm 1) times the scale, in SBR units."""
    samples = torch.tensor([[[0.40, 0.30], [0.50, 0.30], [0.40, 0.50], [0.30, 0.50]]])  # [B=1, n=4, 2]
    engine = Engine(lambda e, batch: SBRUnitsd(sbr_max=6.84)({"pred": samples}))
    settings = IntervalSettings(0.5, 0.2, 2.0, 1.0, "test")
    writer = PredictionWriter(tmp_path, settings, errors=[{"id": "X", "error": "X: bad"}])
    writer.attach(engine)
    engine.run([{"id": ["P1"], "image": torch.zeros(1, 2, 4, 4, 4)}], max_epochs=1)
    row = read_rows(tmp_path / "predictions.csv")[0]
    sigma_sym_r = np.sqrt(0.005) + 0.5 * 0.15  # sigma_r + gamma_r sigma_sym (normalised)
    sigma_sym_l = 0.1 + 0.2 * 0.15
    assert float(row["sbr_right"]) == pytest.approx(0.4 * 6.84, abs=1e-4)
    assert float(row["sigma_sym"]) == pytest.approx(0.15 * 6.84, abs=1e-5)
    assert float(row["high_right"]) == pytest.approx((0.4 + 2.0 * sigma_sym_r) * 6.84, abs=1e-4)
    assert float(row["low_left"]) == pytest.approx((0.4 - 1.0 * sigma_sym_l) * 6.84, abs=1e-4)
    assert row["abnormal_right"] == "1" and row["abnormal_left"] == "1"  # 2.736 < 3.401, 3.345
    assert read_rows(tmp_path / "errors.csv") == [{"id": "X", "error": "X: bad"}]
    # what it wrote, held in memory as written (the in-process serving reads these, not the files)
    assert writer.records == [json.loads((tmp_path / "patients" / "P1.json").read_text())]
    assert writer.rows == [{k: v for k, v in writer.records[0].items() if k in COLUMNS}]
    assert writer.error_rows == [{"id": "X", "error": "X: bad"}] and writer.report_files == [None]
    # the kept samples own their memory: views would keep each batch's tensors alive and the heap would grow per batch
    assert writer.samples and all(kept.flags.owndata for kept in writer.samples)
    assert GAUSSIAN_95 == pytest.approx(1.96, abs=1e-3)


def _archive_json(ts, name: str) -> dict:
    """A JSON file stored in a TorchScript archive's ``extra/`` folder, read back with zipfile."""
    with zipfile.ZipFile(ts) as archive:
        member = next(n for n in archive.namelist() if n.endswith(f"extra/{name}"))
        return json.loads(archive.read(member))


def test_torchscript_export_matches_the_checkpoint_and_records_its_config(trained, tiny_cohort, tmp_path):
    ts = tmp_path / "model.ts"
    cmd = [
        sys.executable, "scripts/export_torchscript.py", "--filepath", str(ts), "--ckpt", str(trained / "model.pt"),
        "--network_def#channels", TINY,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # the archive says which network the weights are (the override), and its metadata keeps every dependency
    assert _archive_json(ts, "inference.json")["network_def"]["channels"] == [4, 4, 4, 4]
    packages = _archive_json(ts, "metadata.json")["required_packages_version"]
    assert {"pytorch-ignite", "nibabel", "itk", "h5py"} <= set(packages)
    exported = read_checkpoint(ts)  # its record: the exported config's network arguments and sbr_max
    assert exported.network["channels"] == [4, 4, 4, 4]
    assert (exported.sbr_max, exported.sbr_max_recorded) == (6.84, True)
    scripted = exported.load_into(VGGRegressor3D(), "cpu")
    record = read_checkpoint(trained / "model.pt")
    eager = record.load_into(VGGRegressor3D(**record.network), "cpu")
    x = torch.rand(3, 1, 50, 50, 20) + 0.5
    assert torch.allclose(scripted(x), eager(x), atol=1e-5)
    torch.manual_seed(3)
    mc_scripted = scripted.mc_forward(x, 10, 4)
    torch.manual_seed(3)
    assert torch.allclose(mc_scripted, eager.mc_forward(x, 10, 4), atol=1e-5)
    # inference straight from model.ts, or with compile on, gives the model.pt predictions
    for name, ckpt, compile_ in (("pt", trained / "model.pt", False), ("ts", ts, False),
                                 ("compiled", trained / "model.pt", True)):  # fmt: skip
        run_config("inference", tiny_cohort, ckpt_path=str(ckpt), output_dir=str(tmp_path / name),
                   amp=False, compile=compile_)  # fmt: skip
    pt_rows = read_rows(tmp_path / "pt" / "predictions.csv")
    for other in ("ts", "compiled"):
        for a, b in zip(pt_rows, read_rows(tmp_path / other / "predictions.csv"), strict=True):
            assert float(a["sbr_left"]) == pytest.approx(float(b["sbr_left"]), abs=1e-4)
            assert float(a["high_right"]) == pytest.approx(float(b["high_right"]), abs=1e-4)


def test_a_bad_case_is_recorded_and_the_others_go_on_labelled_or_not(trained, tiny_cohort, tmp_path):
    datalist = json.loads((tiny_cohort / "datalist.json").read_text())
    broken = dict(datalist["test"][0], id="BROKEN", image="smwi/missing.nii.gz")
    unlabelled = {k: v for k, v in datalist["test"][0].items() if not k.startswith("sbr_")} | {"id": "NOSBR"}
    datalist["test"] = [broken, unlabelled, *datalist["test"]]  # labelled and unlabelled cases share a batch
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))
    out = tmp_path / "inf"
    run_config("inference", tiny_cohort, ckpt_path=str(trained / "model.pt"), output_dir=str(out),
               datalist=str(path))  # fmt: skip
    errors = read_rows(out / "errors.csv")
    assert [e["id"] for e in errors] == ["BROKEN"] and errors[0]["error"].startswith("BROKEN: ")
    assert "\n" not in errors[0]["error"]
    rows = read_rows(out / "predictions.csv")
    assert [r["id"] for r in rows] == [c["id"] for c in datalist["test"][1:]]
    assert float(rows[0]["sbr_right"]) == pytest.approx(float(rows[1]["sbr_right"]), abs=0.2)  # same image
    assert json.loads((out / "patients" / "NOSBR.json").read_text())["true_sbr_right"] is None


def test_bf16_amp_and_fp32_predictions_agree_within_1_percent(trained, tiny_cohort, tmp_path):
    for name, amp in (("amp", True), ("fp32", False)):
        run_config("inference", tiny_cohort, ckpt_path=str(trained / "model.pt"),
                   output_dir=str(tmp_path / name), amp=amp, mc_samples=0)  # fmt: skip
    rows = {name: read_rows(tmp_path / name / "predictions.csv") for name in ("amp", "fp32")}
    for a, b in zip(rows["amp"], rows["fp32"], strict=True):
        for side in ("right", "left"):
            assert abs(float(a[f"sbr_{side}"]) - float(b[f"sbr_{side}"])) <= 0.01 * float(b[f"sbr_{side}"])


def test_predict_script_prints_one_patient(trained, tiny_cohort, tmp_path):
    case = json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]
    cmd = [
        sys.executable, "scripts/predict.py", "--image", str(tiny_cohort / case["image"]),
        "--right", *map(str, case["centroid_right"]), "--left", *map(str, case["centroid_left"]),
        "--ckpt", str(trained / "model.pt"), "--mc-samples", "10", "--id", case["id"],
        "--network_def#channels", TINY, "--output-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    row = read_rows(tmp_path / "predictions.csv")[0]
    assert f"right SBR {float(row['sbr_right']):.2f}  [{row['low_right']}, {row['high_right']}]" in result.stdout
    missing = subprocess.run([*cmd[:3], str(tmp_path / "nope.nii.gz"), *cmd[4:]], cwd=REPO, env=bundle_env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith(f"error: {case['id']}: ")


def test_openvino_backend_gives_the_torch_predictions_and_intervals(trained, tiny_cohort, tmp_path):
    """The recommended CPU backend: features through OpenVINO, the dropout head in PyTorch, so the seeded MC masks and
    hence the intervals are the torch path's, up to bf16 rounding of the features."""
    require_extra("openvino", "openvino")
    for backend in ("torch", "openvino"):
        run_config("inference", tiny_cohort, ckpt_path=str(trained / "model.pt"), output_dir=str(tmp_path / backend),
                   amp=True, inference_backend=backend)  # fmt: skip
    rows = {backend: read_rows(tmp_path / backend / "predictions.csv") for backend in ("torch", "openvino")}
    assert [r["id"] for r in rows["openvino"]] == [r["id"] for r in rows["torch"]]
    for a, b in zip(rows["openvino"], rows["torch"], strict=True):
        for column in ("sbr_right", "sbr_left", "low_right", "high_right", "low_left", "high_left"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=0.02, abs=0.02), column
    with pytest.raises(RuntimeError) as failure:  # the override reaches prepare_network
        run_config("inference", tiny_cohort, ckpt_path=str(trained / "model.pt"), output_dir=str(tmp_path / "x"),
                   inference_backend="tensorrt")  # fmt: skip
    assert "inference_backend must be one of auto, torch, openvino, got 'tensorrt'" in str(failure.value.__cause__)
