"""The bundle as MONAI tooling and users see it: metadata, configs, and a real training run."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, bundle_env, workflow_configs
from monai.bundle import ConfigParser, ConfigWorkflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bundle
from bundle.data import LoadNigralPatchesd
from bundle.data import datalist as datalist_module
from bundle.method.networks import VGGRegressor3D
from bundle.synthetic import smwi_cohort

REQUIRED_METADATA = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
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
    # types MONAI Deploy's bundle operator maps (image -> Image, tuples -> ndarray); "number" is not one of them
    assert (image["type"], pred["type"]) == ("image", "tuples")


def test_top_level_metadata_is_a_symlink_to_configs():
    link = REPO / "metadata.json"
    assert link.is_symlink() and link.resolve() == (REPO / "configs" / "metadata.json").resolve()


def test_parsed_metadata_lists_every_dependency():
    """MONAI renames the deprecated optional_packages_version by overwriting required_packages_version: the parsed
    metadata (what ckpt_export stores in model.ts) must still list every package the bundle imports."""
    parser = ConfigParser()
    parser.read_meta(str(REPO / "configs" / "metadata.json"))
    meta = parser.get("_meta_")
    assert "optional_packages_version" not in meta
    assert {"pytorch-ignite", "nibabel", "pydicom", "itk", "scipy", "scikit-learn", "tensorboard", "matplotlib",
            "h5py"} <= set(meta["required_packages_version"])  # fmt: skip
    assert any("Data-driven identification of diagnostically useful extrastriatal signal" in r
               for r in meta["references"])  # fmt: skip


def test_train_config_builds_the_table1_network_from_patch_size():
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, VGGRegressor3D)
    assert sum(p.numel() for p in net.parameters()) == 14_053_441
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    parser["patch_size"] = [34, 34, 18]
    net = parser.get_parsed_content("network_def")  # patch_size reaches the network: 2 x 2 x 1 after 4 pools
    assert net.patch_size == (34, 34, 18) and net.num_features == 512 * 2 * 2 * 1


def _workflow(workflow: str, tiny_cohort, tmp_path, **overrides) -> ConfigWorkflow:
    """A workflow as MONAI tooling (Deploy, Label, the model zoo) loads it, on the tiny cohort and a tiny model."""
    torch.save(VGGRegressor3D(channels=(2, 2, 2, 2)).state_dict(), tmp_path / "model.pt")
    return ConfigWorkflow(
        config_file=workflow_configs(workflow), meta_file=str(REPO / "configs" / "metadata.json"),
        workflow_type="train" if workflow == "training" else "infer", bundle_root=str(REPO),
        dataset_dir=str(tiny_cohort), output_dir=str(tmp_path / "out"), ckpt_path=str(tmp_path / "model.pt"),
        **{"network_def#channels": [2, 2, 2, 2], **overrides},
    )  # fmt: skip


@pytest.mark.parametrize("workflow", ["training", "inference", "calibrate", "evaluating"])
def test_monai_finds_every_workflow_property(workflow, tiny_cohort, tmp_path):
    flow = _workflow(workflow, tiny_cohort, tmp_path)
    flow.initialize()
    assert flow.check_properties() == []


def test_verify_net_in_out_passes():
    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
           "configs/metadata.json", "--config_file", "configs/inference.json"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("workflow", ["calibrate", "evaluating"])
def test_inference_side_workflows_share_the_preprocessing_and_its_overrides(workflow, tiny_cohort, tmp_path):
    """One definition: the resolved preprocessing equals inference's, and reader overrides reach it everywhere."""
    overrides = {"dicom_reader": "pydicom", "mat_lr_axis": 0, "mat_axcodes": "PLS", "resample_spacing": False}

    def loader_settings(name: str) -> tuple:
        parser = _workflow(name, tiny_cohort, tmp_path, **overrides).parser
        parser.parse()
        assert parser.get("preprocessing") == _raw_inference_preprocessing()
        load = next(
            t for t in parser.get_parsed_content("preprocessing").transforms if isinstance(t, LoadNigralPatchesd)
        )
        unit = parser.get_parsed_content("postprocessing").transforms[0]
        return load.dicom_reader, load.mat_lr_axis, load.mat_ornt is not None, load.extract.resample, unit.sbr_max

    assert loader_settings(workflow) == loader_settings("inference") == ("pydicom", 0, True, False, 6.84)


def _raw_inference_preprocessing() -> dict:
    return json.loads((REPO / "configs" / "inference.json").read_text())["preprocessing"]


def test_documented_overrides_reach_the_training_objects(tiny_cohort, tmp_path):
    """Each user-facing id changes the object it names (README "Your own cohort")."""
    flow = _workflow("training", tiny_cohort, tmp_path, learning_rate=0.123, batch_size=3, num_epochs=5, alpha=0.07,
                     beta=2.0, sbr_max=5.0, loss_form="hinge")  # fmt: skip
    flow.initialize()
    parser = flow.parser
    assert parser.get_parsed_content("optimizer").param_groups[0]["max_lr"] == 0.123  # the one-cycle peak
    assert parser.get_parsed_content("lr_scheduler").total_steps == 5 * len(
        parser.get_parsed_content("train#dataloader")
    )
    assert parser.get_parsed_content("train#dataloader").batch_size == 3
    assert parser.get_parsed_content("train#trainer").state.max_epochs == 5
    loss = parser.get_parsed_content("loss")
    assert (loss.alpha, loss.beta, loss.form) == (0.07, 2.0, "hinge")
    target = parser.get_parsed_content("train#preprocessing").transforms[1]
    assert target.sbr_max == 5.0 and parser.get_parsed_content("model_record").sbr_max == 5.0
    assert parser.get_parsed_content("validate#postprocessing").transforms[0].sbr_max == 5.0


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
    to_device = parser.get_parsed_content("train#preprocessing").transforms[2]
    assert to_device.converter.device == torch.device(expected)
    assert set(to_device.keys) == {"patch_right", "patch_left", "label"}
    assert (parser.get_parsed_content("num_workers") == 0) == workers_zero


def test_default_datalist_triggers_the_demo_cohort_and_others_must_exist(tmp_path, monkeypatch):
    calls = []

    def fake(out, field):
        calls.append((out, field))
        return out / "datalist.json"

    monkeypatch.setattr(smwi_cohort, "ensure_demo_cohort", fake)
    demo = datalist_module.resolve_datalist(tmp_path / "data" / "demo" / "datalist.json", tmp_path)
    wide = datalist_module.resolve_datalist(tmp_path / "data" / "demo_wide" / "datalist.json", tmp_path)
    assert calls == [(tmp_path / "data" / "demo", "slab"), (tmp_path / "data" / "demo_wide", "wide")]
    assert demo.endswith("datalist.json") and wide.endswith("datalist.json")
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
        "bundle",
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


@pytest.mark.parametrize("overlay", ["demo.json", "quick_start.json"])
def test_training_overlays_only_change_ids_train_json_defines(overlay):
    """A typo in an overlay would add an id nothing reads and silently train the paper's protocol instead."""
    train = ConfigParser()
    train.read_config(str(REPO / "configs" / "train.json"))
    changes = json.loads((REPO / "configs" / overlay).read_text())
    assert changes
    unknown = [key for key in changes if key not in train]
    assert not unknown, f"{overlay} sets ids train.json does not define: {unknown}"
    composed = ConfigParser()
    composed.read_config([str(REPO / "configs" / "train.json"), str(REPO / "configs" / overlay)])
    for key, value in changes.items():
        assert composed[key] == value
