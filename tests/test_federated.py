"""Federated training on NVIDIA FLARE's simulator: 3 synthetic sites x 8 patients, a tiny network, 2 rounds.

The global model is written in the bundle's checkpoint format and read by the inference workflow; every site's
validation MAE is logged per round; a site that fails in the second round leaves the others to finish; the privacy
filters land in the exported job and act on what a site sends."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from apps.federated.job import build_job, cohort_sites
from apps.federated.settings import FederatedSettings
from apps.federated.site_training import merge_received
from bundle.synthetic.multisite_cohort import generate_multisite_cohort

TINY = ["--override", "network_def#channels=[4,8,16,32]", "--override", "batch_size=2"]


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    out = tmp_path_factory.mktemp("fl") / "cohort"
    generate_multisite_cohort(out, sizes=(8, 8, 8), seed=2, num_workers=1, progress=False)
    return out


def _simulate(cohort, output_dir, *extra):
    cmd = [sys.executable, "-m", "apps.federated", "simulate", "--cohort", str(cohort), "--output_dir",
           str(output_dir), "--rounds", "2", "--local_epochs", "1", *TINY, *extra]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def _rounds(output_dir):
    with open(output_dir / "rounds.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_three_sites_two_rounds_give_a_global_model_the_inference_workflow_reads(sites, tmp_path):
    out = tmp_path / "fed"
    result = _simulate(sites, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _rounds(out)
    # round 0 and 1: the received model is validated before local training; round 2 validates the last aggregate
    expected = {(k, s) for k in range(3) for s in ("site1", "site2", "site3")}
    assert {(int(r["round"]), r["site"]) for r in rows} == expected
    assert all(float(r["val_mae_of_received_model"]) >= 0 and int(r["n_train"]) == 6 for r in rows)
    assert all(int(r["train_steps"]) == 3 for r in rows if int(r["round"]) < 2)  # 6 cases, batch 2, one epoch
    state = torch.load(out / "model.pt", weights_only=True)
    record = state._metadata[""]["bundle"]
    assert record["network"]["channels"] == [4, 8, 16, 32] and record["sbr_max"] == 6.84
    best = min((1, 2), key=lambda k: sum(float(r["val_mae_of_received_model"]) for r in rows if int(r["round"]) == k))
    assert record["federated"]["round"] == best  # the best weighted validation MAE (equal n_val: the plain mean)

    infer = subprocess.run(
        [sys.executable, "-m", "bundle", "run", "inference", "--config_file", "configs/inference.json",
         "--ckpt_path", str(out / "model.pt"), "--dataset_dir", str(sites / "site2"), "--output_dir",
         str(tmp_path / "infer"), "--mc_samples", "4", "--reports", "false"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert infer.returncode == 0, infer.stderr[-3000:]
    with open(tmp_path / "infer" / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    test_ids = [c["id"] for c in json.loads((sites / "site2" / "datalist.json").read_text())["test"]]
    assert [p["id"] for p in predictions] == test_ids and all(float(p["sbr_right"]) > 0 for p in predictions)


def test_a_site_that_fails_in_the_second_round_leaves_the_others_to_finish(sites, tmp_path):
    # with --privacy exclude, so the same run shows the filter acting: the head never reaches the server
    out = tmp_path / "fed"
    result = _simulate(sites, out, "--drop_out", "site3:1", "--privacy", "exclude")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _rounds(out)
    assert {r["site"] for r in rows if r["round"] == "0"} == {"site1", "site2", "site3"}
    assert {r["site"] for r in rows if r["round"] in ("1", "2")} == {"site1", "site2"}
    state = torch.load(out / "model.pt", weights_only=True)
    with np.load(out / "initial_model.npz") as initial:
        assert np.array_equal(state["fc.weight"].numpy(), initial["fc.weight"])  # never left a site
        assert not np.array_equal(state["blocks.0.0.weight"].numpy(), initial["blocks.0.0.weight"])  # averaged
        site_head = torch.load(out / "sites" / "site1" / "model.pt", weights_only=True)["fc.weight"]
        assert not np.array_equal(site_head.float().numpy(), initial["fc.weight"])  # trained, kept at the site


def test_a_site_keeps_its_local_variables_when_the_global_model_arrives():
    local = {"blocks.w": torch.zeros(2), "fc.weight": torch.ones(2)}
    received = {"blocks.w": np.full(2, 5.0), "fc.weight": np.full(2, 7.0)}
    merged = merge_received(local, received, {"fc.weight"})
    assert merged["blocks.w"].tolist() == [5.0, 5.0] and merged["fc.weight"].tolist() == [1.0, 1.0]
    assert merged["fc.weight"].data_ptr() != local["fc.weight"].data_ptr()  # a copy: load_state_dict refuses aliases
    with pytest.raises(ValueError, match="--keep_local names no variable of the network: head"):
        merge_received(local, received, {"head"})


def test_fewer_sites_than_min_sites_is_refused_before_anything_runs(sites, tmp_path):
    settings = FederatedSettings(sites=cohort_sites(sites), output_dir=tmp_path, min_sites=4)
    with pytest.raises(ValueError, match="min_sites must be between 1 and the 3 site"):
        build_job(settings)
    with pytest.raises(ValueError, match="no site site9"):
        cohort_sites(sites, ["site1", "site9"])


@pytest.mark.parametrize(("privacy", "filter_path"), [("exclude", "ExcludeVars"), ("percentile", "PercentilePrivacy")])
def test_privacy_filters_are_applied_to_what_a_site_sends(sites, tmp_path, monkeypatch, privacy, filter_path):
    monkeypatch.chdir(REPO)  # export runs from the repository root
    settings = FederatedSettings(sites=cohort_sites(sites), output_dir=tmp_path / "out", privacy=privacy,
                                 overrides={"network_def#channels": [4, 8, 16, 32]})  # fmt: skip
    build_job(settings).export_job(str(tmp_path / "jobs"))
    config = json.loads(next((tmp_path / "jobs").rglob("config_fed_client.json")).read_text())
    filters = [f["filters"][0]["path"] for f in config["task_result_filters"]]
    assert any(path.endswith(filter_path) for path in filters), config["task_result_filters"]
    # the task names the server sends: NVFlare applies a filter by exact task name, never for the pattern "*"
    assert sorted(config["task_result_filters"][0]["tasks"]) == ["train", "validate"]
    if privacy == "exclude":
        assert config["task_result_filters"][0]["filters"][0]["args"]["exclude_vars"] == ["fc.weight", "fc.bias"]
    # the job carries the site script (found in its own custom folder at a site), not a partial copy of the bundle
    assert config["executors"][0]["executor"]["args"]["task_script_path"] == "apps/federated/site_training.py"
    assert not list((tmp_path / "jobs").rglob("custom/bundle"))
