"""What a new user meets first: the checkpoint builds its own network, override typos stop the run before any work,
logs stay readable in files, reports carry the numbers of predictions.csv, evaluating reuses earlier predictions."""

import csv
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, bundle_env, workflow_configs
from monai.bundle import run

from bundle.method.networks import VGGRegressor3D
from bundle.workflows.overrides import unknown_override

WIDTH = [4, 4, 4, 8]
"""A width no config defaults to; the model is also trained with dropout 0.3 (default 0.2)."""
AS_TRAINED = {"network_def#channels": WIDTH, "network_def#dropout": 0.3}
UNCALIBRATED = "symmetric MC dropout, uncalibrated (+-1.96 SD, no calibration.json)"
META = ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]


def bundle_command(workflow: str, configs: list[str], **overrides) -> list[str]:
    config = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "bundle", "run", workflow, "--config_file", config, *META]
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return cmd


def run_logged(cmd: list[str], log_path) -> tuple[int, str]:
    """Run with stdout and stderr going to a file, as a batch job's log; returns (exit code, log text)."""
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, cwd=REPO, env=bundle_env(), stdout=log, stderr=subprocess.STDOUT, timeout=300)
    return code.returncode, log_path.read_text()


def whole_lines(log: str) -> bool:
    """No log record glued onto the end of another line (a progress bar's, say)."""
    return "\r" not in log and all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - ", line)
        for line in log.splitlines()
        if re.search(r" - (DEBUG|INFO|WARNING|ERROR) - ", line)
    )


def run_workflow(workflow: str, tiny_cohort, **overrides) -> None:
    overrides = {"amp": False, "reports": False, **overrides}
    run(workflow, config_file=workflow_configs(workflow), meta_file=str(REPO / "configs" / "metadata.json"),
        bundle_root=str(REPO), dataset_dir=str(tiny_cohort), **overrides)  # fmt: skip


def read_rows(path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_cohort):
    """A tiny model trained for 2 epochs with a non-default width and dropout; returns (folder, training log)."""
    out = tmp_path_factory.mktemp("usability")
    cmd = bundle_command("training", ["configs/train.json"], num_epochs=2, learning_rate=0.001,
                         output_dir=str(out / "train"), ckpt_path=str(out / "model.pt"), dataset_dir=str(tiny_cohort),
                         **AS_TRAINED)  # fmt: skip
    code, log = run_logged(cmd, out / "train.log")
    assert code == 0, log[-3000:]
    return out, log


def test_training_log_is_whole_lines_and_ends_with_the_best_model(model):
    out, log = model
    assert whole_lines(log) and log.count("nvImageCodec is not available") <= 1
    last = log.rstrip("\n").splitlines()[-1]
    assert " - INFO - best model: val_mae " in last and " at epoch " in last
    assert f"-> {out / 'model.pt'} (checkpoints and TensorBoard events -> {out / 'train'})" in last


def test_every_workflow_builds_the_network_the_checkpoint_records(model, tiny_cohort):
    """calibrate, inference, evaluating and predict.py give the same numbers with and without the width override."""
    out, _ = model
    ckpt = str(out / "model.pt")
    common = {"ckpt_path": ckpt, "mc_samples": 8}
    calibration = {"section": "training", "coverage": 0.8}  # 11 cases: enough for an 80 % conformal guarantee
    run_workflow("calibrate", tiny_cohort, **common, **calibration, **AS_TRAINED)
    calibrated_with = (out / "calibration.json").read_text()
    run_workflow("calibrate", tiny_cohort, **common, **calibration)
    assert json.loads((out / "calibration.json").read_text()) == json.loads(calibrated_with)

    run_workflow("inference", tiny_cohort, **common, **AS_TRAINED, output_dir=str(out / "with"))
    run_workflow("inference", tiny_cohort, **common, output_dir=str(out / "plain"))
    plain = read_rows(out / "plain" / "predictions.csv")
    assert plain == read_rows(out / "with" / "predictions.csv") and plain[0]["interval_kind"] == "calibrated"

    run_workflow("evaluating", tiny_cohort, **common, output_dir=str(out / "eval"), run_inference=True, figures=False)
    assert read_rows(out / "eval" / "predictions.csv") == plain

    run_workflow("inference", tiny_cohort, ckpt_path=ckpt, mc_samples=0, output_dir=str(out / "deterministic"))
    case = json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]
    assert case["centroid_space"] == "voxel"
    cmd = [sys.executable, "scripts/predict.py", "--image", str(tiny_cohort / case["image"]),
           "--right", *map(str, case["centroid_right"]), "--left", *map(str, case["centroid_left"]),
           "--ckpt_path", ckpt, "--mc_samples", "0", "--output_dir", str(out / "predict"),
           "--amp", "false"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    clash = subprocess.run([*cmd, "--section", "validation"], cwd=REPO, env=bundle_env(), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert clash.returncode == 2
    assert clash.stderr.splitlines()[-1].endswith("--section: set by predict.py itself (one case), not an override")
    predicted = read_rows(out / "predict" / "predictions.csv")[0]
    expected = next(r for r in read_rows(out / "deterministic" / "predictions.csv") if r["id"] == case["id"])
    for side in ("right", "left"):
        assert float(predicted[f"sbr_{side}"]) == pytest.approx(float(expected[f"sbr_{side}"]), abs=2e-4)


def test_both_export_commands_need_no_width_override(model):
    out, _ = model
    ckpt = out / "model.pt"
    reference = VGGRegressor3D(channels=WIDTH, dropout=0.3, standardise_input=True)  # train.json's recipe
    reference.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.rand(2, 1, 50, 50, 20)
    commands = {
        "monai.ts": [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath",
                     str(out / "monai.ts"), "--ckpt_file", str(ckpt), "--ckpt_path", str(ckpt), "--config_file",
                     "configs/inference.json", "--meta_file", "configs/metadata.json"],
        "script.ts": [sys.executable, "scripts/export_torchscript.py", "--ckpt", str(ckpt), "--filepath",
                      str(out / "script.ts")],
    }  # fmt: skip
    for name, cmd in commands.items():
        result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        exported = torch.jit.load(str(out / name)).eval()
        torch.testing.assert_close(exported(x), reference.eval()(x))


def test_an_override_contradicting_the_checkpoint_is_one_line(model, tiny_cohort, tmp_path):
    out, _ = model
    cmd = bundle_command("inference", ["configs/inference.json"], ckpt_path=str(out / "model.pt"),
                         dataset_dir=str(tiny_cohort), output_dir=str(tmp_path / "inf"),
                         **{"network_def#channels": [4, 4, 4, 4]})  # fmt: skip
    code, log = run_logged(cmd, tmp_path / "log")
    assert code == 2
    assert log.rstrip("\n").splitlines()[-1] == (
        f"error: checkpoint {out / 'model.pt'} was trained with another network than network_def sets: "
        "channels [4, 4, 4, 4] (checkpoint: [4, 4, 4, 8]); drop the network_def override (the checkpoint's own "
        "record is used by default)"
    )
    assert "Traceback" not in log and not (tmp_path / "inf" / "predictions.csv").exists()


def test_an_override_typo_stops_training_before_any_data_is_made(tmp_path):
    cmd = bundle_command("training", ["configs/train.json"], num_epoch=2, bundle_root=str(tmp_path),
                         output_dir=str(tmp_path / "train"))  # fmt: skip
    code, log = run_logged(cmd, tmp_path / "log")
    assert code == 2
    assert log.rstrip("\n").splitlines()[-1] == "error: unknown config id 'num_epoch' (did you mean 'num_epochs'?)"
    assert not (tmp_path / "data").exists() and not (tmp_path / "train").exists()


def test_a_missing_checkpoint_stops_inference_before_the_demo_cohort_is_made(tmp_path):
    cmd = bundle_command("inference", ["configs/inference.json"], bundle_root=str(tmp_path))
    code, log = run_logged(cmd, tmp_path / "log")
    assert code == 2
    assert log.rstrip("\n").splitlines()[-1] == (
        f"error: checkpoint not found: {tmp_path}/models/model.pt (give --ckpt_path: a training run writes "
        "runs/train/model.pt; a checkout ships models/model.pt)"
    )
    assert not (tmp_path / "data").exists()


def test_training_refuses_to_write_over_a_shipped_model(tmp_path):
    shipped = tmp_path / "models" / "model.pt"
    shipped.parent.mkdir()
    shipped.write_bytes(b"shipped weights")
    (tmp_path / "large_files.yml").write_text(
        "large_files:\n  - path: models/model.pt\n    url: ''\n    hash_val: ''\n    hash_type: sha256\n"
    )
    cmd = bundle_command("training", ["configs/train.json"], bundle_root=str(tmp_path), ckpt_path=str(shipped),
                         output_dir=str(tmp_path / "train"))  # fmt: skip
    code, log = run_logged(cmd, tmp_path / "log")
    assert code == 2
    assert log.rstrip("\n").splitlines()[-1] == (
        f"error: {shipped} is a shipped demo file (listed in large_files.yml); this run writes its own: "
        "give another --ckpt_path"
    )
    assert shipped.read_bytes() == b"shipped weights" and not (tmp_path / "data").exists()


def test_override_ids_known_through_configs_components_and_monai(tmp_path):
    train = [str(REPO / "configs" / "train.json")]
    assert unknown_override(train, {"num_epochs": 2, "network_def#channels": [4] * 4}) is None
    assert unknown_override(train, {"network_def#in_channels": 1, "validate#evaluator#_disabled_": True}) is None
    assert unknown_override(train, {"network_def::dropout_p": 0.1}) == (
        "unknown config id 'network_def::dropout_p' (did you mean 'network_def#dropout'?)"
    )
    assert unknown_override(train, {"save_execute_config": "x"}) == "unknown config id 'save_execute_config'"
    assert unknown_override(train, {"save_execute_config": "x"}, tracking="mlflow") is None
    overlay = tmp_path / "mine.json"
    overlay.write_text(json.dumps({"my_threshold": 0.5}))
    assert unknown_override([*train, str(overlay)], {"my_threshold": 0.7}) is None  # the documented escape hatch


def test_inference_log_over_many_cases_is_readable(model, tiny_cohort, tmp_path):
    """11 cases: library warnings at most once, whole lines, the last line says what was written where."""
    out, _ = model
    cmd = bundle_command("inference", ["configs/inference.json"], ckpt_path=str(out / "model.pt"),
                         dataset_dir=str(tiny_cohort), section="training", mc_samples=4, reports=True,
                         output_dir=str(tmp_path / "inf"), calibration_file=str(tmp_path / "none.json"))  # fmt: skip
    code, log = run_logged(cmd, tmp_path / "log")
    assert code == 0, log[-3000:]
    assert log.count("nvImageCodec is not available") <= 1 and whole_lines(log)
    written = f"{tmp_path / 'inf' / 'predictions.csv'}, errors.csv, patients/"
    last = log.rstrip("\n").splitlines()[-1]
    assert last.endswith(f"wrote 11 predictions ({UNCALIBRATED}) and 0 errors -> {written}")
    for row in read_rows(tmp_path / "inf" / "predictions.csv"):
        report = json.loads((tmp_path / "inf" / "patients" / f"{row['id']}.json").read_text())
        for key in ("sbr_right", "sbr_left", "low_right", "high_right", "low_left", "high_left"):
            assert report[key] == float(row[key])
        assert report["interval_kind"] == row["interval_kind"] == "uncalibrated"
        assert (tmp_path / "inf" / "patients" / f"{row['id']}.png").stat().st_size > 10_000


def test_evaluating_reuses_predictions_of_the_same_inputs(model, tiny_cohort, tmp_path, capsys):
    out, _ = model
    common = {"ckpt_path": str(out / "model.pt"), "mc_samples": 4, "figures": False}
    run_workflow("inference", tiny_cohort, **{k: v for k, v in common.items() if k != "figures"},
                 output_dir=str(tmp_path / "inf"))  # fmt: skip
    reuse = {"reuse_from": [str(tmp_path / "eval"), str(tmp_path / "inf")], "output_dir": str(tmp_path / "eval")}
    capsys.readouterr()
    run_workflow("evaluating", tiny_cohort, **common, **reuse)
    assert f"reusing the predictions of {tmp_path / 'inf'}" in capsys.readouterr().out
    assert (tmp_path / "eval" / "predictions.csv").read_bytes() == (tmp_path / "inf" / "predictions.csv").read_bytes()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 3
    run_workflow("evaluating", tiny_cohort, **common, **reuse, gamma_r=0.1)
    log = capsys.readouterr().out
    assert f"running inference first: {tmp_path / 'eval'} differs in gamma_r; {tmp_path / 'inf'} differs in" in log
    record = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert record["inputs"]["gamma_r"] == 0.1 and record["n_predictions"] == 3
