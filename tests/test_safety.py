"""Hostile ids and values, malformed files, tiny or empty inputs and interrupted runs: one-line errors, exit code 2,
nothing outside output_dir, nothing half-written or mixed (docs/reliability.md, fault table)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, bundle_env, workflow_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ignite.engine import Engine

from bundle.data import LoadNigralPatchesd, load_cases
from bundle.evaluation.predictions import read_predictions
from bundle.handlers import writers
from bundle.handlers.writers import PredictionWriter
from bundle.io import remove_stale_temporaries
from bundle.method.networks import VGGRegressor3D
from bundle.method.uncertainty import IntervalSettings
from bundle.workflows.inference import PreparedCases
from bundle.workflows.preflight import check_output_dir, training_disk_mb
from bundle.workflows.savers import AtomicCheckpointSaver

SETTINGS = IntervalSettings(0.0, 0.0, 1.96, 1.96, "test", "uncalibrated", None)


def files_under(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()}


def write_predictions(out: Path, ids: list[str], errors=()) -> PredictionWriter:
    """PredictionWriter on fixed MC samples (SBR units) of ``ids``, through a hand-made engine."""
    samples = torch.linspace(2.0, 4.0, 2 * len(ids) * 5).reshape(len(ids), 5, 2).double()
    engine = Engine(lambda e, batch: {"pred": samples})
    writer = PredictionWriter(out, SETTINGS, errors=list(errors))
    writer.attach(engine)
    engine.run([{"id": ids, "image": torch.zeros(len(ids), 2, 2, 2, 2)}], max_epochs=1)
    return writer


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- case ids -------------------------------------------------------------------------------------------------


def test_traversal_absolute_and_formula_ids_stay_inside_output_dir(tmp_path):
    victim = tmp_path / "victim" / "calibration.json"
    victim.parent.mkdir()
    victim.write_text("precious")
    out = tmp_path / "a" / "b" / "c" / "d" / "out"
    ids = ["../../../../victim/calibration", "/srv/victim/abs_id", '=HYPERLINK("http://evil","x")', "P1"]
    write_predictions(out, ids)
    assert victim.read_text() == "precious"
    assert all(path.is_relative_to(out.resolve()) for path in files_under(tmp_path) if path != victim.resolve())
    assert not Path("/srv/victim/abs_id.json").exists()
    assert sorted(p.name for p in (out / "patients").iterdir()) == [
        "P1.json", "_.._.._.._victim_calibration.json", "_HYPERLINK__http___evil___x__.json", "_srv_victim_abs_id.json",
    ]  # fmt: skip
    rows = read_csv(out / "predictions.csv")
    assert rows[2]["id"] == '\'=HYPERLINK("http://evil","x")'  # neutralised for spreadsheets
    assert rows[0]["id"] == "../../../../victim/calibration" and rows[3]["id"] == "P1"


def test_ids_that_collide_as_file_names_are_an_error_for_the_second(tmp_path):
    write_predictions(tmp_path, ["a/b", "a_b", "A_B", "c"])
    assert [r["id"] for r in read_csv(tmp_path / "predictions.csv")] == ["a/b", "c"]
    errors = read_csv(tmp_path / "errors.csv")
    assert errors == [
        {"id": "a_b", "error": "a_b: id: its output file name 'a_b' is already used by case 'a/b' (ids differ only "
                               "in characters that file names cannot hold)"},
        {"id": "A_B", "error": "A_B: id: its output file name 'A_B' is already used by case 'a/b' (ids differ only "
                               "in characters that file names cannot hold)"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case_id", "text"),
    [("P\n1", "contains control characters"), ("P\x001", "contains control characters")],
)
def test_ids_with_control_characters_stop_at_the_datalist(tmp_path, case_id, text):
    (tmp_path / "d.json").write_text(json.dumps({"test": [{"id": case_id, "mat": "x.mat"}]}))
    with pytest.raises(ValueError, match=text) as info:
        load_cases(tmp_path / "d.json", "test")
    assert "\n" not in str(info.value)


# --- datalist paths and sections ------------------------------------------------------------------------------


def test_relative_paths_may_not_leave_dataset_dir_absolute_ones_may(tmp_path):
    base = tmp_path / "cohort"
    base.mkdir()
    (tmp_path / "d.json").write_text(json.dumps({"test": [{"id": "P1", "mat": "../secret.mat"}]}))
    with pytest.raises(ValueError, match=r"^P1: mat: relative path '../secret.mat' leaves dataset_dir .*cohort; give"):
        load_cases(tmp_path / "d.json", "test", base)
    (tmp_path / "d.json").write_text(json.dumps({"test": [{"id": "P1", "mat": str(tmp_path / "elsewhere.mat")},
                                                          {"id": "P2", "mat": "sub/../inside.mat"}]}))  # fmt: skip
    cases = load_cases(tmp_path / "d.json", "test", base)
    assert cases[0]["mat"] == str(tmp_path / "elsewhere.mat")
    assert Path(os.path.normpath(cases[1]["mat"])) == base / "inside.mat"


# --- workflows stopped with one line --------------------------------------------------------------------------


def run_bundle(workflow: str, *args: str, configs=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bundle", "run", workflow, "--config_file", repr(configs or
           workflow_configs(workflow)), *args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)
    torch.save(VGGRegressor3D(channels=(2, 2, 2, 2)).state_dict(), path)
    return path


def inference_args(tiny_cohort, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset_dir", str(tiny_cohort), "--ckpt_path", str(model), "--output_dir", str(out),
            "--network_def#channels", "[2,2,2,2]", "--mc_samples", "3", "--reports", "False", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"^error: datalist .*d\.json: malformed JSON \(Expecting property name"),
        ({"training": []}, r"^error: datalist .*d\.json: no section 'test' \(has \['training'\]\)$"),
        ({"test": []}, r"^error: datalist .*d\.json: section 'test' is empty; there is nothing to run on$"),
        ({"test": [{"id": "P1", "mat": "a.mat"}, {"id": "P1", "mat": "b.mat"}]},
         r"^error: P1: id: duplicate id 'P1' in 'test' \(datalist .*\)$"),
    ],
)  # fmt: skip
def test_datalist_problems_stop_inference_with_one_line_and_exit_2(tmp_path, tiny_cohort, tiny_model, content, message):
    datalist = tmp_path / "d.json"
    datalist.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "out"
    result = run_bundle("inference", *inference_args(tiny_cohort, tiny_model, out, "--datalist", str(datalist)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert __import__("re").match(message, last_line(result)), last_line(result)
    assert "Traceback" not in result.stderr
    assert not (out / "predictions.csv").exists()


def test_malformed_calibration_file_is_named(tmp_path, tiny_cohort, tiny_model):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"coverage": 0.95, "modes": {"mc": {}}}))
    args = inference_args(tiny_cohort, tiny_model, tmp_path / "out", "--calibration_file", str(calibration))
    result = run_bundle("inference", *args)
    assert result.returncode == 2
    assert last_line(result) == (f"error: calibration file {calibration}: no 'symmetric' for interval mode "
                                 "'symmetric'; run calibrate again")  # fmt: skip
    calibration.write_text("{")
    result = run_bundle("inference", *args)
    assert last_line(result) == (f"error: calibration file {calibration}: not valid JSON (JSONDecodeError); run "
                                 "calibrate again")  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("--num_epochs", "0"), "error: num_epochs must be a positive integer, got 0"),
        (("--batch_size", "0"), "error: batch_size must be a positive integer, got 0"),
        (("--learning_rate", "-1"), "error: learning_rate must be a positive number, got -1"),
        (("--batch_size", "12"), "error: the training set has 11 cases, fewer than batch_size 12: no full batch to "
                                 "train on (incomplete batches are dropped); lower --batch_size or add cases"),
    ],
)  # fmt: skip
def test_bad_training_arguments_and_a_tiny_training_set_stop_before_training(tmp_path, tiny_cohort, override, message):
    args = ["--dataset_dir", str(tiny_cohort), "--output_dir", str(tmp_path / "out"), "--ckpt_path",
            str(tmp_path / "model.pt"), "--network_def#channels", "[2,2,2,2]", *override]  # fmt: skip
    result = run_bundle("training", *args)
    assert result.returncode == 2 and last_line(result) == message, result.stderr[-2000:]
    assert "Epoch[1]" not in result.stdout + result.stderr and not (tmp_path / "model.pt").exists()


# --- per-case reader problems: one line, the batch goes on ------------------------------------------------------


def test_corrupt_zero_byte_and_looping_inputs_are_one_line_errors(tmp_path, tiny_cohort, tiny_model):
    test_cases = json.loads((tiny_cohort / "datalist.json").read_text())["test"]
    corrupt, empty = tmp_path / "corrupt.nii.gz", tmp_path / "empty.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b" + os.urandom(2000))  # a gzip header, then garbage
    empty.write_bytes(b"")
    os.symlink(tmp_path / "loop_b.nii.gz", tmp_path / "loop_a.nii.gz")
    os.symlink(tmp_path / "loop_a.nii.gz", tmp_path / "loop_b.nii.gz")
    bad = [
        dict(test_cases[0], id=name, image=str(tmp_path / f"{name}.nii.gz")) for name in ("corrupt", "empty", "loop_a")
    ]
    datalist = tmp_path / "d.json"
    datalist.write_text(json.dumps({"test": [*bad, test_cases[1]]}))
    out = tmp_path / "out"
    result = run_bundle("inference", *inference_args(tiny_cohort, tiny_model, out, "--datalist", str(datalist)))
    assert result.returncode == 0, result.stderr[-2000:]
    errors = {row["id"]: row["error"] for row in read_csv(out / "errors.csv")}
    assert errors["corrupt"].startswith("corrupt: image: cannot read corrupt.nii.gz (not a readable NIfTI file: ")
    assert errors["empty"] == "empty: image: cannot read empty.nii.gz (empty file)"
    assert errors["loop_a"] == f"loop_a: image: symbolic link loop: {tmp_path / 'loop_a.nii.gz'}"
    assert all(len(e) < 300 and "0x" not in e and "\n" not in e for e in errors.values())
    assert [r["id"] for r in read_csv(out / "predictions.csv")] == [test_cases[1]["id"]]


# --- consistent output folders --------------------------------------------------------------------------------


def test_an_interrupted_run_leaves_the_previous_outputs_whole(tmp_path, monkeypatch):
    write_predictions(tmp_path, ["P1", "P2", "P3"])
    before = {p: p.read_bytes() for p in files_under(tmp_path)}
    calls = []

    def failing_write_json(path, obj):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # as a kill between two patients
        return real_write_json(path, obj)

    real_write_json = writers.write_json
    monkeypatch.setattr(writers, "write_json", failing_write_json)
    with pytest.raises(KeyboardInterrupt):
        write_predictions(tmp_path, ["Q1", "Q2", "Q3"])
    assert {p: p.read_bytes() for p in files_under(tmp_path)} == before  # old run intact, nothing of the new one
    assert not list(tmp_path.glob(".run-*"))


def test_a_run_killed_hard_is_cleaned_by_the_next_one(tmp_path, tiny_cohort, tiny_model):
    out = tmp_path / "out"
    (out / ".run-abc.partial.tmp" / "patients").mkdir(parents=True)  # what SIGKILL during staging leaves
    (out / ".run-abc.partial.tmp" / "patients" / "P9.json").write_text("{}")
    (out / ".predictions.csv.x1y2.tmp").write_text("id,sbr")  # and during an atomic write
    (out / "patients").mkdir()
    (out / "patients" / "OLD.json").write_text("{}")  # a previous run's patient, not in this one
    result = run_bundle("inference", *inference_args(tiny_cohort, tiny_model, out))
    assert result.returncode == 0, result.stderr[-2000:]
    ids = [r["id"] for r in read_csv(out / "predictions.csv")]
    assert sorted(p.stem for p in (out / "patients").iterdir()) == sorted(ids)  # no mix of runs
    assert sorted(p.name for p in out.iterdir()) == ["errors.csv", "patients", "predictions.csv", "run.json"]


def test_remove_stale_temporaries_keeps_other_files(tmp_path):
    (tmp_path / ".metrics.json.abc.tmp").write_text("")
    (tmp_path / "patients").mkdir()
    (tmp_path / "patients" / ".P1.json.x.tmp").write_text("")
    (tmp_path / "keep.tmp").write_text("mine")  # not hidden: not ours
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 2 and sorted(p.name for p in tmp_path.rglob("*")) == ["keep.tmp", "patients"]


def test_after_a_resume_only_the_kept_checkpoints_remain(tmp_path):
    for name in (
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
        "checkpoint_epoch=3.pt",
        "checkpoint_iteration=50.pt",
    ):
        torch.save({"x": torch.zeros(1)}, tmp_path / name)
    state = {"model": torch.nn.Linear(1, 1), "optimizer": torch.nn.Linear(1, 1)}  # a full state: "checkpoint_..."
    saver = AtomicCheckpointSaver(tmp_path, state, epoch_level=True, save_interval=1, n_saved=1)
    assert sorted(p.name for p in saver.adopt_existing()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    engine.state.epoch = 3  # resumed after epoch 3: the next save is epoch 4
    engine.run(range(1), max_epochs=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=4.pt", "checkpoint_iteration=50.pt"]


# --- disk and write probes ------------------------------------------------------------------------------------


def test_write_probe_never_follows_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in (f".write_test_{os.getpid()}", ".write-probe-", ".write-probe-.tmp"):
        os.symlink(victim, out / name)
    check_output_dir(out)
    assert victim.read_text() == "precious"
    assert len(list(out.iterdir())) == 3  # only the planted links: the probe is gone


def test_space_check_counts_the_tensorboard_events():
    network = VGGRegressor3D(channels=(4, 4, 4, 4))
    params_mb = sum(p.numel() * 4 for p in network.parameters()) / 2**20
    needed = training_disk_mb(network, num_epochs=70, iterations_per_epoch=32)
    assert needed == pytest.approx(params_mb * 10 + 70 * (0.15 + 0.0005 * 32))
    assert needed > 9.0  # the demo run's events file (9.0 MB) alone


def test_too_little_disk_stops_with_one_line(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 99, 2**20))
    with pytest.raises(SystemExit) as info:
        check_output_dir(tmp_path, required_mb=200)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: only 1 MB free in {tmp_path}; this run writes about 200 MB"


# --- property: any id, any case values ------------------------------------------------------------------------

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 500), st.floats(allow_nan=True), st.text(max_size=12),
                   st.lists(st.floats(-1e3, 1e3), max_size=4))  # fmt: skip
CASES = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=40)},
    optional={
        key: VALUES
        for key in (
            "image",
            "mat",
            "patch_right",
            "patch_left",
            "centroid_right",
            "centroid_left",
            "centroid_space",
            "sbr_right",
            "sbr_left",
        )
    },  # fmt: skip
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=CASES)
def test_any_case_gives_a_one_line_error_or_a_prediction_inside_output_dir(tmp_path_factory, case):
    root = tmp_path_factory.mktemp("prop")
    out = root / "a" / "b" / "out"
    (root / "d.json").write_text(json.dumps({"test": [case]}))
    try:
        cases = load_cases(root / "d.json", "test", root / "a")
    except ValueError as err:
        assert "\n" not in str(err)
        return
    prepared = PreparedCases(cases, LoadNigralPatchesd(), progress=False)
    for error in prepared.errors:
        assert "\n" not in error["error"] and error["error"].startswith(f"{error['id']}: ")
    write_predictions(out, [c["id"] for c in cases], prepared.errors)
    assert all(path.is_relative_to(out.resolve()) for path in files_under(root) if path.name != "d.json")
    assert len(read_csv(out / "predictions.csv")) + len(read_csv(out / "errors.csv")) >= 1


def test_neutralised_ids_read_back_unchanged_for_evaluation(tmp_path):
    write_predictions(tmp_path, ["-P1", "+P2", "@P3", "P4"])
    assert read_csv(tmp_path / "predictions.csv")[0]["id"] == "'-P1"
    assert list(read_predictions(tmp_path / "predictions.csv")) == ["-P1", "+P2", "@P3", "P4"]


def test_numbers_as_text_are_not_escaped_but_formulas_are(tmp_path):
    """A merged predictions.csv re-writes cells read as text: a negative interval bound must stay a number."""
    from bundle.io import spreadsheet_safe, write_csv

    assert spreadsheet_safe("-0.2069") == "-0.2069" and spreadsheet_safe("+1e-3") == "+1e-3"
    assert spreadsheet_safe("-1+2") == "'-1+2" and spreadsheet_safe("=1") == "'=1" and spreadsheet_safe(" -1") == " -1"
    write_csv(tmp_path / "p.csv", ["id", "low"], [{"id": "=SUM(A1)", "low": "-0.5"}])
    assert (tmp_path / "p.csv").read_text().splitlines()[1] == "'=SUM(A1),-0.5"
