"""The bundle as MONAI tooling and users see it: metadata, configs, and a real training run."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, bundle_env
from monai.bundle import ConfigParser
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bundle
from bundle.data import datalist as datalist_module
from bundle.method.networks import VGGRegressor3D

REQUIRED_METADATA = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "optional_packages_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "references",
    "intended_use",
    "data_source",
    "data_type",
    "network_data_format",
)


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((REPO / "configs" / "metadata.json").read_text())


def test_metadata_has_the_bundle_specification_fields(metadata):
    missing = [key for key in REQUIRED_METADATA if not metadata.get(key)]
    assert not missing, f"metadata.json lacks {missing}"
    assert metadata["version"] == bundle.__version__
    assert metadata["version"] in metadata["changelog"]
    assert "research use only" in metadata["intended_use"].lower()
    assert "synthetic" in metadata["data_source"].lower()


def test_metadata_network_data_format(metadata):
    image = metadata["network_data_format"]["inputs"]["image"]
    assert (image["modality"], image["num_channels"], image["spatial_shape"]) == ("MR", 1, [50, 50, 20])
    assert image["dtype"] == "float32" and image["is_patch_data"] is False
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert (pred["num_channels"], pred["spatial_shape"], pred["dtype"]) == (1, [1], "float32")


def test_top_level_metadata_is_a_symlink_to_configs():
    link = REPO / "metadata.json"
    assert link.is_symlink() and link.resolve() == (REPO / "configs" / "metadata.json").resolve()


def test_train_config_builds_the_table1_network():
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, VGGRegressor3D)
    assert sum(p.numel() for p in net.parameters()) == 14_053_441
    for key in (
        "bundle_root",
        "dataset_dir",
        "datalist",
        "output_dir",
        "ckpt_path",
        "device",
        "num_epochs",
        "batch_size",
        "learning_rate",
        "sbr_max",
        "alpha",
        "beta",
        "amp",
        "seed",
        "network_def",
    ):
        assert key in parser.config, key


@pytest.mark.parametrize(
    ("device", "on_device", "expected", "workers_zero"),
    [("cuda", True, "cuda", True), ("cuda", False, "cpu", False), ("cpu", True, "cpu", True)],
)
def test_cache_on_device_moves_the_cached_patches_and_drops_loader_workers(device, on_device, expected, workers_zero):
    """``cache_on_device``: the cached patches end on the training device, augmentation runs there (no workers)."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    parser["device"] = f"$torch.device('{device}')"
    parser["cache_on_device"] = on_device
    assert parser.get_parsed_content("cache_device") == torch.device(expected)
    to_device = parser.get_parsed_content("train#deterministic_transforms")[-1]
    assert to_device.converter.device == torch.device(expected)
    assert set(to_device.keys) == {"patch_right", "patch_left", "label"}
    assert (parser.get_parsed_content("num_workers") == 0) == workers_zero


def test_default_datalist_triggers_the_demo_cohort_and_others_must_exist(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datalist_module, "ensure_demo_cohort", lambda out: calls.append(out) or out / "datalist.json")
    demo = datalist_module.resolve_datalist(tmp_path / "data" / "demo" / "datalist.json", tmp_path)
    assert calls == [tmp_path / "data" / "demo"] and demo.endswith("datalist.json")
    with pytest.raises(FileNotFoundError, match="datalist not found: .*mine.json"):
        datalist_module.resolve_datalist(tmp_path / "mine.json", tmp_path)


def test_load_cases_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        datalist_module.load_cases(bad, "training")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"training": [{"id": "A", "image": "a.nii.gz"}, {"id": "A"}]}))
    with pytest.raises(ValueError, match="duplicate id 'A'"):
        datalist_module.load_cases(dup, "training")
    with pytest.raises(ValueError, match="no section 'test'"):
        datalist_module.load_cases(dup, "test")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"training": [{"id": "A", "image": "smwi/a.nii.gz"}]}))
    assert datalist_module.load_cases(good, "training")[0]["image"] == str(tmp_path / "smwi" / "a.nii.gz")
    assert datalist_module.load_cases(good, "training", "/data")[0]["image"] == "/data/smwi/a.nii.gz"


@pytest.mark.parametrize("compile_", ["false", "true"])
def test_training_command_writes_a_loadable_best_checkpoint(tmp_path, tiny_cohort, compile_):
    """Also with ``compile``: the checkpoint holds F's plain keys, not those of the compiled wrapper."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "configs/train.json",
        "--num_epochs",
        "2",
        "--network_def#channels",
        "[4,4,4,4]",
        "--output_dir",
        str(out),
        "--ckpt_path",
        str(out / "model.pt"),
        "--dataset_dir",
        str(tiny_cohort),
        "--compile",
        compile_,
    ]
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "val_mae" in log and "reference: predicting the training mean" in log
    state = torch.load(out / "model.pt", weights_only=True)
    VGGRegressor3D(channels=[4, 4, 4, 4]).load_state_dict(state, strict=True)
    events = EventAccumulator(str(out))
    events.Reload()
    tags = events.Tags()
    assert {"val_mae", "val_r_right", "loss_reg", "loss_sym", "beyond_margin", "train_loss"} <= set(tags["scalars"])
    assert [s.step for s in events.Scalars("val_mae")] == [1, 2]
    assert len(tags["images"]) == 2  # the (mirrored right, left) patch pair
