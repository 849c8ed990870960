"""The synthetic-data demo models the repository ships (``large_files.yml``): they record the final recipe, load and
predict, and a fresh clone runs inference with them before any training.

Their hashes against ``large_files.yml`` are checked in tests/test_model_zoo.py, with the zoo's other steps.
"""

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, bundle_env
from monai.bundle import ConfigParser

from bundle.serving.case import localise_case
from bundle.synthetic import smwi_cohort
from bundle.workflows.checkpoints import read_checkpoint

DEMO_CHANNELS = [16, 32, 64, 128]
LOCALISER_TOLERANCE_MM = 3.0
"""The patch is 25 x 25 x 20 mm (50 x 50 x 20 voxels of 0.5 x 0.5 x 1 mm): a centre within 3 mm of the truth keeps
the nigra well inside it."""


def _shipped_hash(root, path: str) -> str:
    entries = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    return next(entry["hash_val"] for entry in entries if entry["path"] == path)


def test_the_shipped_regressor_records_the_demo_recipe():
    model = read_checkpoint(REPO / "models" / "model.pt")
    assert model.network["channels"] == DEMO_CHANNELS and model.network["standardise_input"] is True
    assert model.sbr_max_recorded and model.bundle_version is not None
    calibration = json.loads((REPO / "models" / "calibration.json").read_text())
    assert calibration["coverage"] == 0.95 and {"mc", "symmetric"} <= set(calibration["modes"])
    assert 0.0 <= calibration["gamma_r"] <= 1.0 and calibration["scale"]["right"] > 0


def test_a_fresh_clone_runs_inference_with_the_shipped_files(tiny_cohort, tmp_path):
    """The README's plain inference command (only the cohort and output folder differ): the shipped model, its
    calibration and localiser; calibrated intervals around every prediction; run.json names the shipped files."""
    out = tmp_path / "inference"
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
               "--dataset_dir", str(tiny_cohort), "--output_dir", str(out), "--mc_samples", "20"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    n_test = len(json.loads((tiny_cohort / "datalist.json").read_text())["test"])
    assert len(rows) == n_test and not (out / "errors.csv").read_text().strip().count("\n")
    for row in rows:
        assert row["interval_kind"] == "calibrated", row
        for side in ("right", "left"):
            low, sbr, high = (float(row[f"{k}_{side}"]) for k in ("low", "sbr", "high"))
            assert low <= sbr <= high and sbr >= 0.0, row
    record = json.loads((out / "run.json").read_text())
    assert record["inputs"]["checkpoint"] == _shipped_hash(REPO, "models/model.pt")
    assert record["inputs"]["calibration"] == _shipped_hash(REPO, "models/calibration.json")


def test_the_shipped_localiser_finds_both_nigrae_of_a_new_wide_field_subject(tmp_path):
    """Without centroids, inference's localiser (``models/localiser.pt``) places both patch centres near the
    simulated truth of a subject it never saw (a seed outside the demo cohorts)."""
    subject = smwi_cohort.simulate_subject(4.0, 2.5, np.random.default_rng(2026), smwi_cohort.WIDE_FIELD)
    image = tmp_path / "W1.nii.gz"
    nib.save(nib.Nifti1Image(subject.volume, subject.affine), image)
    case = localise_case({"id": "W1", "image": str(image)})
    truth = {side: (subject.affine @ [*getattr(subject, f"centroid_{side}"), 1.0])[:3] for side in ("right", "left")}
    for side, world in truth.items():
        error = np.linalg.norm(np.asarray(case[f"centroid_{side}"], dtype=float) - world)
        assert error < LOCALISER_TOLERANCE_MM, f"{side} centroid {error:.1f} mm from the truth"


@pytest.mark.parametrize("name", ["dat_spect", "datnet"])
def test_the_companion_demo_models_load_and_classify(name):
    root = REPO / "bundles" / name
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network_def")
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state))
    network.eval()
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    shape = metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    with torch.no_grad():
        probabilities = torch.softmax(network(torch.rand(2, 1, *shape)), dim=1)
    assert probabilities.shape == (2, len(parser["classes"]))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))
