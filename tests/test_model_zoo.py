"""The model zoo's checks run against this bundle with MONAI's own APIs, offline (docs/integrations/model_zoo.md).

The Project-MONAI/model-zoo CI verifies a bundle in this order: download its large files (``large_files.yml``), the
required files, version and changelog, the metadata against the schema its ``schema`` URL names, the workflow
properties (only when ``supported_apps`` is set), the network's input and output against ``network_data_format``,
TorchScript export of ``models/model.pt`` and loading of ``models/model.ts``. Here the same steps run on a copy of the
bundle whose weights are a tiny network (channels 2-2-2-2), exported, published to a local folder with
``scripts/publish_model.py`` and downloaded back with MONAI's ``download_large_files``; nothing is written into the
repository.
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
import torch
import yaml
from conftest import REPO
from monai.apps.utils import SUPPORTED_HASH_TYPES, HashCheckError
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, create_workflow, verify_metadata, verify_net_in_out
from monai.bundle.properties import InferProperties, MetaProperties
from monai.bundle.scripts import download_large_files
from packaging.version import Version

import bundle
from bundle.constants import DEFAULT_SBR_MAX
from bundle.export.torchscript import export_torchscript
from bundle.method.networks import VGGRegressor3D
from bundle.workflows.checkpoints import ModelRecord, read_checkpoint

TINY = (2, 2, 2, 2)
META = REPO / "configs" / "metadata.json"
BUNDLE_FILES = ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md", "large_files.yml")
"""Files a checkout of the bundle holds: the zoo requires metadata.json and LICENSE and prefers inference.json (and
models/model.pt, which large_files.yml provides); the bundle specification adds docs/README.md."""
WEIGHTS = ("models/model.pt", "models/model.ts")
"""The weights of the tiny published bundle (``zoo_bundle``)."""
ZOO_BUNDLES = {"nigral_sbr": REPO, "dat_spect": REPO / "bundles" / "dat_spect", "datnet": REPO / "bundles" / "datnet"}

SCHEMA_NAME = "meta_schema_20240725.json"
SCHEMA_FILE = REPO / "tests" / "data" / SCHEMA_NAME
"""The constraints of MONAI's metadata schema ``meta_schema_20240725.json`` (the ``schema`` URL of metadata.json),
restated in a file of the repository so that ``verify_metadata`` and the zoo's script run without downloading it;
update it with the URL."""
SCHEMA = json.loads(SCHEMA_FILE.read_text())


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publish_model = _load_script("publish_model")
SHIPPED = {"nigral_sbr": publish_model.DEFAULT_FILES, "dat_spect": ("models/model.pt",), "datnet": ("models/model.pt",)}
"""The synthetic-data demo models each bundle commits and lists in its large_files.yml."""


def copy_bundle(dest: Path, source: Path = REPO) -> Path:
    """A checkout of the bundle at ``dest``: the files of ``BUNDLE_FILES`` and every config, no models."""
    shutil.copytree(source / "configs", dest / "configs")
    for name in BUNDLE_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, dest / name)
    return dest


def check_large_file_entry(entry: dict, schemes: tuple[str, ...]) -> None:
    """An entry MONAI's ``download_large_files`` can use: a file under models/, a real URL, a supported hash."""
    assert {"path", "url", "hash_val", "hash_type"} <= set(entry), entry
    parts = PurePosixPath(entry["path"]).parts
    assert parts[0] == "models" and ".." not in parts and len(parts) > 1, entry["path"]
    url = urlparse(entry["url"])
    assert url.scheme in schemes and (url.netloc or url.scheme == "file"), entry["url"]
    assert url.hostname not in ("example.com", "example.org", "localhost"), f"placeholder URL {entry['url']}"
    size = SUPPORTED_HASH_TYPES[entry["hash_type"]]().digest_size
    assert re.fullmatch(f"[0-9a-f]{{{2 * size}}}", entry["hash_val"]), entry


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads(META.read_text())


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory) -> Path:
    """The bundle as the zoo's CI verifies it: a checkout without weights whose large files (a tiny network's
    ``model.pt`` recording its configuration, and its ``model.ts``) were published to a local release folder and are
    then downloaded and hash-checked by MONAI."""
    root = tmp_path_factory.mktemp("zoo")
    author = copy_bundle(root / "author")
    (author / "large_files.yml").unlink()  # this bundle publishes its tiny weights only
    models = author / "models"
    models.mkdir()
    torch.manual_seed(0)
    torch.save(ModelRecord(VGGRegressor3D(channels=TINY), sbr_max=DEFAULT_SBR_MAX).state_dict(), models / "model.pt")
    export_torchscript(models / "model.ts", models / "model.pt", str(author / "configs" / "inference.json"),
                       author / "configs" / "metadata.json")  # fmt: skip
    release = root / "release"
    shutil.copytree(models, release)
    args = ["--url-base", release.as_uri(), "--bundle-root", str(author), "--files", *WEIGHTS]
    assert publish_model.main(args) == 0
    checkout = copy_bundle(root / "models" / "nigral_sbr", source=author)
    download_large_files(bundle_path=str(checkout))
    return checkout


# --- structure, metadata, version ------------------------------------------------------------------------------


def test_structure_as_the_zoo_checks_it(zoo_bundle):
    for root in (REPO, zoo_bundle):
        missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
        assert not missing, f"{root} lacks {missing}"
    for name in WEIGHTS:  # downloaded by MONAI, byte for byte what was published
        assert (zoo_bundle / name).read_bytes() == (zoo_bundle.parents[1] / "release" / Path(name).name).read_bytes()


@pytest.mark.filterwarnings("ignore:No hash value provided")  # the schema is written here, not downloaded
def test_metadata_passes_verify_metadata_against_the_schema_it_names(metadata, tmp_path):
    assert metadata["schema"].endswith("/" + SCHEMA_NAME), "a new schema URL: update SCHEMA to that schema"
    schema = tmp_path / SCHEMA_NAME
    schema.write_text(json.dumps(SCHEMA))
    verify_metadata(meta_file=str(META), filepath=str(schema))  # the schema file exists: MONAI does not download it
    for key, value in (("authors", None), ("supported_apps", ["monailabel"]), ("version", 6)):
        broken = {k: v for k, v in metadata.items() if k != key} | ({} if value is None else {key: value})
        (tmp_path / "metadata.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=key if value is None else "is not of type"):
            verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(schema))
    broken = json.loads(META.read_text())
    del broken["network_data_format"]["inputs"]["image"]["value_range"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'value_range' is a required property"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(schema))


def test_version_is_the_newest_changelog_entry_and_the_package_version(metadata):
    versions = list(metadata["changelog"])
    assert metadata["version"] == versions[0] == max(versions, key=Version) == bundle.__version__


def test_supported_apps_make_the_zoo_run_its_property_check(metadata):
    """The zoo checks workflow properties only for a bundle whose metadata has ``supported_apps``: {app: version}."""
    apps = metadata.get("supported_apps")
    assert isinstance(apps, dict) and apps, "without supported_apps the zoo skips the property check"
    for app, version in apps.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", app), app
        assert str(Version(version)) == version, (app, version)


# --- workflow properties ---------------------------------------------------------------------------------------


def zoo_property_check(bundle_root: Path, tiny_cohort: Path, out: Path, config: Path | None = None,
                       meta: Path | None = None, **overrides) -> list[str]:  # fmt: skip
    """The zoo's property check: ``create_workflow`` (initialised) of the inference config with ``bundle_root``,
    ``logging_file`` and ``meta_file``, MONAI's meta and inference properties, ``check_properties()``. A missing
    required property raises ``KeyError``; an optional one that the config wires to another id is returned. The zoo
    passes no overrides; here the tiny cohort replaces the demo cohort generated on first use and outputs go to
    ``out``."""
    configs = bundle_root / "configs"
    flow = create_workflow(workflow_type="inference", bundle_root=str(bundle_root),
                           config_file=str(config or configs / "inference.json"),
                           logging_file=str(configs / "logging.conf"), meta_file=str(meta or configs / "metadata.json"),
                           dataset_dir=str(tiny_cohort), output_dir=str(out), **overrides)  # fmt: skip
    flow.properties = {**MetaProperties, **InferProperties}
    return flow.check_properties()


def test_inference_properties_pass_the_zoo_check(zoo_bundle, tiny_cohort, tmp_path):
    assert zoo_property_check(zoo_bundle, tiny_cohort, tmp_path / "out") == []


def test_training_properties_pass(zoo_bundle, tiny_cohort, tmp_path):
    """Not run by the zoo (it has no data), which leaves training properties to the bundle's own tests."""
    out, configs = tmp_path / "out", zoo_bundle / "configs"
    flow = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
                          workflow_type="train", bundle_root=str(zoo_bundle), dataset_dir=str(tiny_cohort),
                          output_dir=str(out), ckpt_path=str(out / "model.pt"),
                          **{"network_def#channels": list(TINY)})  # fmt: skip
    flow.initialize()
    assert flow.check_properties() == []


def test_the_property_check_fails_when_a_property_breaks(zoo_bundle, tiny_cohort, tmp_path):
    rewired = {"my_postprocessing": "@postprocessing", "evaluator#postprocessing": "@my_postprocessing"}
    assert zoo_property_check(zoo_bundle, tiny_cohort, tmp_path / "a", **rewired) == ["postprocessing"]
    config = json.loads((zoo_bundle / "configs" / "inference.json").read_text())
    config["my_inferer"] = config.pop("inferer")
    config["evaluator"]["inferer"] = "@my_inferer"
    (tmp_path / "inference.json").write_text(json.dumps(config))
    with pytest.raises(KeyError, match="'inferer'"):
        zoo_property_check(zoo_bundle, tiny_cohort, tmp_path / "b", config=tmp_path / "inference.json")
    meta = {k: v for k, v in json.loads(META.read_text()).items() if k != "numpy_version"}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(KeyError, match="numpy_version"):
        zoo_property_check(zoo_bundle, tiny_cohort, tmp_path / "c", meta=tmp_path / "metadata.json")


# --- network, export, TorchScript ------------------------------------------------------------------------------


def test_network_input_and_output_match_network_data_format(zoo_bundle, tmp_path):
    """``network_data_format`` describes ``network_def``, the single-patch regressor F (one 1-channel 50x50x20 patch
    in, one normalised SBR out); the paired model applies F to both patches of a patient."""
    args = {"net_id": "network_def", "config_file": str(zoo_bundle / "configs" / "inference.json"),
            "bundle_root": str(zoo_bundle), "network_def#channels": list(TINY)}  # fmt: skip
    verify_net_in_out(meta_file=str(zoo_bundle / "configs" / "metadata.json"), **args)
    meta = json.loads(META.read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 2
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(meta_file=str(tmp_path / "metadata.json"), **args)


def test_export_and_torchscript_load_as_the_zoo_checks_them(zoo_bundle):
    models, configs = zoo_bundle / "models", zoo_bundle / "configs"
    ckpt_export(net_id="network_def", filepath=str(models / "verify_model.ts"), ckpt_file=str(models / "model.pt"),
                meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                bundle_root=str(zoo_bundle))  # fmt: skip
    eager = read_checkpoint(models / "model.pt").load_into(VGGRegressor3D(channels=TINY), "cpu")
    x = torch.rand(3, 1, 50, 50, 20) + 0.5
    for name in ("verify_model.ts", "model.ts"):  # MONAI's export, and the published one (the bundle's exporter)
        scripted = torch.jit.load(str(models / name)).eval()
        torch.testing.assert_close(scripted(x), eager(x))
        torch.manual_seed(3)
        sampled = scripted.mc_forward(x, 4, 2)
        torch.manual_seed(3)
        torch.testing.assert_close(sampled, eager.mc_forward(x, 4, 2))
        with zipfile.ZipFile(models / name) as archive:
            member = next(n for n in archive.namelist() if n.endswith("extra/metadata.json"))
            stored = json.loads(archive.read(member))
        assert stored["version"] == bundle.__version__ and stored["supported_apps"]


# --- large files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO_BUNDLES)
def test_shipped_files_are_listed_with_their_hashes_and_committed(name, tmp_path):
    """Each bundle's large_files.yml lists its shipped demo models with their sha256; a committed entry (empty url)
    is a file of the repository whose bytes have that hash, which MONAI's download_large_files checks."""
    root = ZOO_BUNDLES[name]
    entries = ConfigParser.load_config_file(str(root / "large_files.yml"))["large_files"]
    assert {entry["path"] for entry in entries} == set(SHIPPED[name])
    for entry in entries:
        if entry["url"]:
            check_large_file_entry(entry, ("https",))
        else:
            check_large_file_entry(entry | {"url": "file:///committed"}, ("file",))
            assert entry["hash_type"] == "sha256"
            assert publish_model.file_hash(root / entry["path"]) == entry["hash_val"], f"{entry['path']} changed"
    download_large_files(bundle_path=str(root))  # every file present: hashes checked, nothing fetched
    other = tmp_path / name
    other.mkdir()
    shutil.copy(root / "large_files.yml", other)
    for entry in entries:
        (other / entry["path"]).parent.mkdir(exist_ok=True)
        (other / entry["path"]).write_bytes(b"weights trained elsewhere")
    with pytest.raises(HashCheckError):
        download_large_files(bundle_path=str(other))


def test_publish_model_writes_urls_and_hashes(tmp_path):
    assert set(publish_model.HASH_TYPES) == set(SUPPORTED_HASH_TYPES)
    payload = {"models/model.pt": os.urandom(5000), "models/model.ts": b"exported"}
    for path, data in payload.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_bytes(data)
    other = {"path": "docs/labels.json", "url": "https://host.test/labels.json", "hash_val": "", "hash_type": ""}
    (tmp_path / "large_files.yml").write_text(yaml.safe_dump({"large_files": [other]}))
    base = "https://host.test/releases/download/v1/"
    for hash_type in ("sha256", "md5"):  # a second run replaces the entries of its files and keeps the others
        args = ["--url-base", base, "--bundle-root", str(tmp_path), "--hash-type", hash_type, "--files", *payload]
        assert publish_model.main(args) == 0
        entries = ConfigParser.load_config_file(str(tmp_path / "large_files.yml"))["large_files"]
        assert entries[0] == other and len(entries) == 3
        for entry, (path, data) in zip(entries[1:], payload.items(), strict=True):
            expected = hashlib.new(hash_type, data).hexdigest()
            assert entry == {"path": path, "url": base + Path(path).name, "hash_val": expected, "hash_type": hash_type}
            check_large_file_entry(entry, ("https",))
    for bad in (["--url-base", "host.test/v1"], ["--url-base", base, "--files", "models/missing.pt"],
                ["--url-base", base, "--files", "../outside.pt"]):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            publish_model.main([*bad, "--bundle-root", str(tmp_path)])
        assert stop.value.code == 2


def test_download_refuses_weights_that_do_not_match_the_published_hash(zoo_bundle, tmp_path):
    shutil.copy(zoo_bundle / "large_files.yml", tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"weights trained elsewhere")
    with pytest.raises(HashCheckError):
        download_large_files(bundle_path=str(tmp_path))


def zoo_checkout(name: str, dest: Path) -> Path:
    """The bundle ``name`` as the zoo holds it: its configs, docs, LICENSE, large_files.yml and shipped models, in a
    folder of its own (``models/verify_model.ts`` is written there, not into the repository)."""
    root = ZOO_BUNDLES[name]
    for folder in ("configs", "docs"):
        shutil.copytree(root / folder, dest / folder, ignore=shutil.ignore_patterns("figures", "*.json", "*.png")
                        if folder == "docs" else None)  # fmt: skip
    for path in ("LICENSE", "large_files.yml", *SHIPPED[name]):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / path, dest / path)
    return dest


@pytest.mark.filterwarnings("ignore:No hash value provided")  # the schema file is the repository's
@pytest.mark.parametrize("name", ZOO_BUNDLES)
def test_the_zoo_verifies_each_bundle_with_its_shipped_weights(name, tmp_path):
    """The steps of the zoo's ``ci/verify_bundle.py`` (full mode) in its order, with MONAI's APIs, on each bundle's
    committed files: large files, necessary and preferred files, version and changelog, metadata schema, inference
    properties, network input/output against ``network_data_format``, TorchScript export of ``models/model.pt``."""
    path = zoo_checkout(name, tmp_path / name)
    configs, meta = path / "configs", path / "configs" / "metadata.json"
    download_large_files(bundle_path=str(path))
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (path / required).is_file(), f"{name}: necessary file {required} is not existing"
    metadata = json.loads(meta.read_text())
    version = metadata["version"]
    assert version in metadata["changelog"] and version == max(metadata["changelog"], key=Version)
    assert metadata["schema"].endswith("/" + SCHEMA_NAME)
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA_FILE))
    assert "Research use only" in metadata["intended_use"] and "synthetic" in metadata["data_source"]
    flow = create_workflow(workflow_type="inference", bundle_root=str(path),
                           config_file=str(configs / "inference.json"), logging_file=str(configs / "logging.conf"),
                           meta_file=str(meta))  # fmt: skip
    flow.properties = {**MetaProperties, **InferProperties}
    assert flow.check_properties() == []
    args = {"net_id": "network_def", "meta_file": str(meta), "config_file": str(configs / "inference.json"),
            "bundle_root": str(path)}  # fmt: skip
    verify_net_in_out(**args)
    ckpt_export(filepath=str(path / "models" / "verify_model.ts"), ckpt_file=str(path / "models" / "model.pt"), **args)
    assert torch.jit.load(str(path / "models" / "verify_model.ts")) is not None
    for config in configs.glob("*.json"):
        assert config.read_text().endswith("}\n"), f"{config.name}: no final newline"


def test_companion_bundles_import_only_what_their_metadata_installs():
    """A companion bundle's custom code is the installable package its metadata names (nigral-sbr-bundle, this
    repository's package), never a path of this repository."""
    for name in ("dat_spect", "datnet"):
        root = ZOO_BUNDLES[name]
        metadata = json.loads((root / "configs" / "metadata.json").read_text())
        assert metadata["required_packages_version"]["nigral-sbr-bundle"] == bundle.__version__
        for config in (root / "configs").glob("*.json"):
            text = config.read_text()
            assert "bundles/" not in text and "sys.path" not in text, config
            assert json.loads(text).get("bundle_root", ".") == ".", config


def test_the_root_metadata_lists_every_runtime_dependency_of_the_package(metadata):
    """The zoo installs only what metadata.json names (monai, torch, numpy and required_packages_version), so every
    runtime dependency of the package the root bundle carries must be there."""
    import tomllib

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[;]", requirement)[0].lower() for requirement in dependencies}
    listed = {name.lower() for name in metadata["required_packages_version"]} | {"monai", "torch", "numpy"}
    assert names <= listed, f"metadata.json lacks {sorted(names - listed)}"
