"""Serving one case in-process: the prediction comes from the workflow's writer in memory and equals its files."""

import csv
import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser
from subjects import demo_subject, save_nifti, tiny_model

from bundle.handlers.writers import PredictionWriter
from bundle.io import unescape_cell
from bundle.serving.case import CaseFailed, _prediction_writer, predict_case

WRITER = {
    "_target_": "bundle.handlers.writers.PredictionWriter", "output_dir": "@output_dir", "intervals": "@intervals",
    "errors": "$@dataset.errors", "reports": False, "run_inputs": "@run_inputs",
}  # fmt: skip
INTERVALS = {"_target_": "bundle.method.uncertainty.IntervalSettings", "gamma_r": 0.5, "gamma_l": 0.5,
             "scale_r": 1.96, "scale_l": 1.96, "description": "test"}  # fmt: skip


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A case whose id a spreadsheet would run as a formula (``predictions.csv`` escapes it), and a tiny model."""
    root = tmp_path_factory.mktemp("serving")
    volume, affine, right, left = demo_subject()
    case = {"id": "=subject01", "image": save_nifti(root / "subject01.nii.gz", volume, affine),
            "centroid_right": [int(round(v)) for v in right], "centroid_left": [int(round(v)) for v in left],
            "centroid_space": "voxel"}  # fmt: skip
    return case, tiny_model(root / "models" / "model.pt")


def read_back(out: Path) -> dict:
    """The record as read from the files: the ``predictions.csv`` row (typed) updated with ``patients/<id>.json``."""

    def typed(cell: str):
        if cell == "":
            return None
        try:
            return int(cell) if cell.lstrip("-").isdigit() else float(cell)
        except ValueError:
            return cell

    with open(out / "predictions.csv") as handle:
        (row,) = csv.DictReader(handle)
    (record_file,) = (out / "patients").glob("*.json")
    return {**{key: typed(value) for key, value in row.items()}, "id": unescape_cell(row["id"]),
            **json.loads(record_file.read_text())}  # fmt: skip


def test_the_record_is_the_writers_and_equals_its_files(subject, tmp_path):
    case, model = subject
    prediction = predict_case(case, tmp_path, model, mc_samples=5, overrides={"amp": False})
    expected = read_back(tmp_path)
    assert prediction.record == expected and list(prediction.record) == list(expected)
    assert {k: type(v) for k, v in prediction.record.items()} == {k: type(v) for k, v in expected.items()}
    assert prediction.record["id"] == "=subject01" and prediction.record["mc_samples"] == 5
    assert prediction.report_png == tmp_path / "patients" / "_subject01.png" and prediction.report_png.is_file()
    summary = prediction.summary()
    assert summary["right"]["interval"] == [expected["low_right"], expected["high_right"]]


def test_a_deterministic_run_without_reports(subject, tmp_path):
    case, model = subject
    prediction = predict_case(case, tmp_path, model, mc_samples=0, overrides={"amp": False, "reports": False})
    assert prediction.record == read_back(tmp_path) and prediction.report_png is None
    assert prediction.record["sigma_sym"] is None and prediction.record["interval_kind"] == "none"


def test_a_failed_case_is_its_one_line_error(subject, tmp_path):
    case, model = subject
    with pytest.raises(CaseFailed) as err:
        predict_case({**case, "image": str(tmp_path / "missing.nii.gz")}, tmp_path / "out", model, mc_samples=2)
    with open(tmp_path / "out" / "errors.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert str(err.value) == unescape_cell(row["error"]) and str(err.value).startswith("=subject01: ")
    assert "\n" not in str(err.value)


def test_the_writer_is_found_by_id_else_in_handlers():
    def parser(config: dict) -> ConfigParser:
        found = ConfigParser({"intervals": INTERVALS, "output_dir": "/nonexistent", "run_inputs": {}, **config})
        found.parse()
        return found

    plain = {**WRITER, "errors": []}
    by_id = parser({"prediction_writer": plain, "handlers": [{"_target_": "monai.handlers.StatsHandler"},
                                                             "@prediction_writer"]})  # fmt: skip
    assert by_id.get_parsed_content("prediction_writer") is _prediction_writer(by_id)
    in_list = parser({"handlers": [{"_target_": "monai.handlers.StatsHandler"}, plain]})
    assert isinstance(_prediction_writer(in_list), PredictionWriter)
    with pytest.raises(LookupError, match="prediction_writer"):
        _prediction_writer(parser({"handlers": []}))
