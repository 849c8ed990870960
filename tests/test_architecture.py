"""The layout and the configs stay as docs/architecture.md draws them: one patch-pair chain, named ids instead of list
positions, a multi-GPU overlay that adds only what DDP needs, small modules and sub-packages, no import circle, and
no module of the package that reads ``sys.argv`` outside an entry point."""

import ast
import json
import re
import subprocess
import sys

import torch
from conftest import REPO, bundle_env
from monai.bundle import ConfigParser

from bundle.data import NigralPatchPaird
from bundle.method.networks import VGGRegressor3D
from bundle.workflows.checkpoints import ModelRecord

PACKAGE = REPO / "bundle"
CONFIGS = sorted((REPO / "configs").rglob("*.json"))
DDP_IDS = {
    "device",
    "other_rank",
    "summary_writer#_disabled_",
    "train#sampler",
    "train#trainer#network",
    "train#loss_terms#_disabled_",
    "train#loss_log#_disabled_",
    "train#loss_board#_disabled_",
    "train#progress_bar#_disabled_",
    "validate#sampler",
    "validate#dataloader#sampler",
    "validate#log#_disabled_",
    "validate#board#_disabled_",
    "validate#images#_disabled_",
}


def _parser(*names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(REPO / "configs" / name) for name in names])
    return parser


def _inference(tmp_path) -> ConfigParser:
    """inference.json on a tiny recorded checkpoint, without the localiser (no localiser file here)."""
    torch.save(ModelRecord(VGGRegressor3D(channels=(2, 2, 2, 2)), sbr_max=6.84).state_dict(), tmp_path / "model.pt")
    parser = _parser("inference.json")
    parser["ckpt_path"] = str(tmp_path / "model.pt")
    parser["auto_centroids"] = "$monai.transforms.Identity()"
    return parser


def test_no_config_refers_to_a_list_position():
    for path in CONFIGS:
        assert not re.search(r"#\d", path.read_text()), f"{path.name} refers to a list position"


def test_the_patch_pair_chain_is_written_only_in_its_class(tmp_path):
    chain = ("LoadNigralPatchesd", "SBRTargetd", "DivideByMeand", "ConcatItemsd", "DeleteItemsd")
    for path in CONFIGS:
        assert not any(name in path.read_text() for name in chain), f"{path.name} restates the patch-pair chain"
    train, inference = _parser("train.json"), _inference(tmp_path)
    for parser, name in (
        (train, "train#preprocessing"),
        (train, "validate#preprocessing"),
        (inference, "preprocessing"),
    ):
        assert isinstance(parser.get_parsed_content(name), NigralPatchPaird), name


def test_validation_and_inference_give_the_network_the_same_pair(tiny_cohort, tmp_path):
    case = json.loads((tiny_cohort / "datalist.json").read_text())["validation"][0]
    case = {**case, "image": str(tiny_cohort / case["image"])}
    inference = _inference(tmp_path)
    validated = _parser("train.json").get_parsed_content("validate#preprocessing")(dict(case))
    inferred = inference.get_parsed_content("preprocessing")(dict(case))
    assert torch.equal(validated["image"], inferred["image"]) and torch.equal(validated["label"], inferred["label"])
    assert set(inferred) == {"id", "image", "label"}  # and centroid_source, which the localiser step adds


def test_multi_gpu_overlay_adds_only_what_ddp_needs():
    overlay = json.loads((REPO / "configs" / "multi_gpu_train.json").read_text())
    assert set(overlay) == DDP_IDS
    single, multi = _parser("train.json"), _parser("train.json", "multi_gpu_train.json")
    for key in ("initialize", "preflight", "finalize", "datalist_file", "train#dataloader", "validate#best_saver"):
        assert multi.get(key) == single.get(key), key
    assert multi.get("device") == {"_target_": "bundle.workflows.setup.distributed_device"}


def _package_modules() -> dict[str, ast.Module]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_text())
    return modules


def test_modules_and_sub_packages_stay_small():
    lines = {path: len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert max(lines.values()) <= 400, max(lines, key=lines.get)
    total = sum(lines.values())
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        share = sum(n for path, n in lines.items() if folder in path.parents) / total
        assert share <= 0.20, f"{folder.name}: {share:.0%} of the package"


def test_no_import_circle_between_modules():
    modules = _package_modules()
    graph = {name: set() for name in modules}
    for name, tree in modules.items():
        for node in tree.body:  # module-level imports only: function-local ones are deliberate and lazy
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}

    def visit(name: str, path: list[str]) -> None:
        for dependency in graph[name]:
            assert dependency not in path, " -> ".join([*path, dependency])
            visit(dependency, [*path, dependency])

    for name in graph:
        visit(name, [name])


def test_only_entry_points_read_the_command_line():
    for name, tree in _package_modules().items():
        reads = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr in ("argv", "orig_argv")
            and getattr(node.value, "id", "") == "sys"
        ]
        assert not reads or name == "bundle.__main__", f"{name} reads sys.argv"


def _bundle(*args: str, module: str = "bundle") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, "run", *args]
    return subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)


def test_python_m_bundle_refuses_an_unknown_id():
    refused = _bundle("training", "--config_file", "configs/train.json", "--num_epoch", "2")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == "error: unknown config id 'num_epoch' (did you mean 'num_epochs'?)"


def test_inference_refuses_an_sbr_max_the_checkpoint_was_not_trained_with(tiny_cohort, tmp_path):
    network = VGGRegressor3D(channels=(2, 2, 2, 2))
    torch.save(ModelRecord(network, sbr_max=6.84).state_dict(), tmp_path / "model.pt")
    common = ("--config_file", "configs/inference.json", "--dataset_dir", str(tiny_cohort), "--output_dir",
              str(tmp_path / "out"), "--ckpt_path", str(tmp_path / "model.pt"))  # fmt: skip
    refused = _bundle("inference", *common, "--sbr_max", "5")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        f"error: checkpoint {tmp_path / 'model.pt'} was trained with sbr_max 6.84; --sbr_max 5 contradicts it "
        "(drop the override: inference takes it from the checkpoint)"
    )
    text_boolean = _bundle("inference", *common, "--amp", "false", "--mc_samples", "0", module="monai.bundle")
    assert text_boolean.returncode == 2
    assert text_boolean.stderr.splitlines()[-1].startswith("error: amp must be true or false, got 'false'")
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_config_defaults_equal_the_package_constants():
    """The configs' user-facing defaults and the Python defaults are one number each."""
    from bundle.constants import DEFAULT_SBR_MAX, MC_SAMPLES, PATCH_SIZE

    inference, train = _parser("inference.json"), _parser("train.json")
    assert inference.get("mc_samples") == MC_SAMPLES
    assert train.get("sbr_max") == DEFAULT_SBR_MAX and tuple(train.get("patch_size")) == PATCH_SIZE
