"""The nigrosome-1 localiser: heat-map targets and decoding, plausibility, orientation invariance, the workflows."""

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, bundle_env
from monai.transforms import Compose
from subjects import write_dicom_series

from bundle.localiser.centroids import CentroidHeatmapsd, gaussian_heatmaps, localiser_loading, world_to_voxel
from bundle.localiser.model import (
    MirrorAveraged,
    NigrosomeLocaliser,
    Plausibility,
    decode_heatmaps,
    implausibility,
)
from bundle.localiser.pipeline import AutoCentroidsd, locate, sliding_window
from bundle.synthetic import smwi_cohort as cohort

LIMITS = Plausibility()


def test_decoding_finds_a_fractional_peak_and_its_height():
    points = np.array([[10.3, 12.6, 5.2], [4.0, 20.0, 9.5]])
    maps = gaussian_heatmaps((24, 30, 14), points, (2.0, 2.0, 2.0))
    assert maps.shape == (2, 24, 30, 14) and maps.max() <= 1.0
    found, peaks = decode_heatmaps(maps)
    np.testing.assert_allclose(found, points, atol=1e-3)  # sub-voxel: exact for a Gaussian
    assert peaks[0] == pytest.approx(np.exp(-0.5 * (0.3**2 + 0.4**2 + 0.2**2) / 4), rel=1e-5)


def test_plausibility_names_the_problem():
    right, left = np.array([11.0, -1.0, -3.0]), np.array([-10.0, -2.0, -3.5])
    assert implausibility(right, left, [0.9, 0.8], LIMITS) is None
    assert implausibility(right, left, [0.9, 0.1], LIMITS) == "low localiser confidence on the left side (0.10 < 0.3)"
    assert implausibility(left, right, [0.9, 0.9], LIMITS) == (
        "right and left centres on the wrong sides of the midline (right x - left x = -21.0 mm)"
    )
    assert implausibility(right, right - [5.0, 0, 0], [0.9, 0.9], LIMITS) == (
        "right-left distance 5.0 mm outside [12, 34] mm"
    )
    assert implausibility(right, left + [0, 0, 9.0], [0.9, 0.9], LIMITS) == "centres 8.5 mm apart in height (> 6 mm)"


@pytest.fixture(scope="module")
def wide_subject(tmp_path_factory):
    """One wide-field subject stored four ways: RAS, LPS (x and y reversed), permuted axes (z, x, y) and a DICOM
    series folder (LPS slices, shuffled files)."""
    s = cohort.simulate_subject(4.0, 2.0, np.random.default_rng(4), cohort.WIDE_FIELD)
    out = tmp_path_factory.mktemp("orientations")
    lps_affine = s.affine.copy()
    for axis in (0, 1):  # index i of the reversed axis is n - 1 - i of the original
        lps_affine[:3, 3] += lps_affine[:3, axis] * (s.volume.shape[axis] - 1)
        lps_affine[:3, axis] *= -1
    permuted_affine = np.eye(4)
    permuted_affine[:3, :3] = s.affine[:3, [2, 0, 1]]
    permuted_affine[:3, 3] = s.affine[:3, 3]
    stored = {
        "ras": (s.volume, s.affine),
        "lps": (s.volume[::-1, ::-1], lps_affine),
        "permuted": (np.transpose(s.volume, (2, 0, 1)), permuted_affine),
    }
    paths = {}
    for name, (array, affine) in stored.items():
        paths[name] = out / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array), affine), paths[name])
    paths["dicom"] = write_dicom_series(out / "dicom", s.volume, s.affine, seed=3)
    world = [(s.affine @ [*v, 1.0])[:3] for v in (s.centroid_right, s.centroid_left)]
    return paths, np.array(world)


def test_targets_sit_at_the_same_world_point_in_any_storage_order(wide_subject):
    paths, world = wide_subject
    prepare = Compose([*localiser_loading((2.0, 2.0, 2.0)), CentroidHeatmapsd(sigma_mm=2.0)])
    for path in paths.values():
        item = prepare({"id": "x", "image": str(path), "centroid_space": "world",
                        "centroid_right": world[0].tolist(), "centroid_left": world[1].tolist()})  # fmt: skip
        points, _ = decode_heatmaps(item["label"])
        found = (np.asarray(item["image"].affine) @ np.c_[points, np.ones(2)].T).T[:, :3]
        np.testing.assert_allclose(found, world, atol=0.3)
        np.testing.assert_allclose(world_to_voxel(item["image"].affine, found), points, atol=1e-6)


def test_the_localiser_gives_the_same_world_centroids_for_ras_lps_permuted_and_dicom_inputs(wide_subject):
    paths, _ = wide_subject
    torch.manual_seed(0)
    network = NigrosomeLocaliser(features=(4, 4, 8, 8, 16, 4)).eval()
    prepare = Compose(localiser_loading(network.spacing))
    inferer = sliding_window(network.roi)
    results = {}
    for name, path in paths.items():
        image = prepare({"image": str(path)})["image"]
        with torch.no_grad():
            heatmaps = inferer(image[None], network)[0]
        results[name] = locate(heatmaps, image.affine, image.meta["original_affine"])
    for name in ("lps", "permuted", "dicom"):
        np.testing.assert_allclose(results[name]["world"], results["ras"]["world"], atol=0.5)
    # voxel indices refer to each file's own array: the RAS and LPS indices mirror each other in x and y
    shape = nib.load(paths["ras"]).shape
    np.testing.assert_allclose(results["lps"]["voxel"][:, :2], np.array(shape[:2]) - 1 - results["ras"]["voxel"][:, :2],
                               atol=0.5)  # fmt: skip


class _BrightSpots(torch.nn.Module):
    """Stand-in localiser: heat maps = the image itself in channel 0 (right) and 1 (left), so a blank or noise-only
    image gives a low peak. Tests the plumbing of :class:`AutoCentroidsd`, not learning."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1)


class _RightOnly(torch.nn.Module):
    """Stand-in localiser that sees only a right nigrosome, weighted by the left-right position: channel 0 = the
    image x (its array index along X), channel 1 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)
        return torch.cat([x * ramp, torch.zeros_like(x)], dim=1)


def test_mirror_averaging_gives_each_side_the_other_sides_view_of_the_mirrored_volume():
    x = torch.rand(2, 1, 6, 5, 4)
    ramp = torch.arange(6.0).view(1, 1, -1, 1, 1)
    # direct pass [x ramp, 0]; mirrored pass along X: [flip(x) ramp, 0] -> flipped back [x flip(ramp), 0] -> sides
    # swapped [0, x flip(ramp)]; the mean:
    expected = 0.5 * torch.cat([x * ramp, x * ramp.flip(2)], dim=1)
    torch.testing.assert_close(MirrorAveraged(_RightOnly())(x), expected)
    torch.testing.assert_close(MirrorAveraged(_BrightSpots())(x), torch.cat([x, x], dim=1))


def test_auto_centroids_refuse_low_confidence_with_one_line(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 16), np.float32), affine), tmp_path / "blank.nii.gz")
    auto = AutoCentroidsd(_BrightSpots(), Compose(localiser_loading((2.0, 2.0, 2.0))[:2]), sliding_window((32, 32, 16)))
    with pytest.raises(ValueError) as err:
        auto({"id": "N1", "image": str(tmp_path / "blank.nii.gz")})
    assert str(err.value) == "N1: localiser: low localiser confidence on the right side (0.00 < 0.3)"
    annotated = {"id": "A1", "image": "x.nii.gz", "centroid_right": [1, 2, 3], "centroid_left": [4, 5, 6]}
    assert auto(annotated)["centroid_source"] == "annotated"
    no_localiser = AutoCentroidsd(None, lambda d: d, sliding_window((16, 16, 16)))
    with pytest.raises(ValueError, match="^N2: centroids: none given and no localiser"):
        no_localiser({"id": "N2", "image": "y.nii.gz", "centroid_space": "auto"})


@pytest.fixture(scope="module")
def wide_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("wide") / "c"
    cohort.generate_cohort(out, n_patients=8, seed=2, num_workers=1, progress=False, field="wide")
    return out


def test_localise_workflows_train_and_write_centroids(wide_cohort, tmp_path):
    """A tiny localiser through the real commands: localiser.pt records its grid, centroids.csv has the README
    columns and the error against the annotation, implausible results go to errors.csv."""
    common = ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
              "--dataset_dir", str(wide_cohort), "--localiser_path", str(tmp_path / "localiser.pt")]  # fmt: skip
    configs = "['configs/localise.json','configs/localise_train.json']"
    train = [sys.executable, "-m", "bundle", "run", "localise_train", "--config_file", configs,
             "--num_epochs", "1", "--localiser_def#features", "[4,4,8,8,16,4]",
             "--output_dir", str(tmp_path / "train"), *common]  # fmt: skip
    result = subprocess.run(train, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from bundle.workflows.checkpoints import read_checkpoint

    assert read_checkpoint(tmp_path / "localiser.pt").network == {"features": [4, 4, 8, 8, 16, 4],
                                                         "spacing": [2.0, 2.0, 2.0], "roi": [64, 64, 16]}  # fmt: skip
    localise = [sys.executable, "-m", "bundle", "run", "localise", "--config_file", "configs/localise.json",
                "--section", "training", "--output_dir", str(tmp_path / "out"), *common]  # fmt: skip
    result = subprocess.run(localise, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "out" / "centroids.csv") as handle:
        rows = list(csv.DictReader(handle))
    cases = json.loads((wide_cohort / "datalist.json").read_text())["training"]
    assert [r["id"] for r in rows] == [c["id"] for c in cases]
    assert list(rows[0])[:10] == ["id", "right_x", "right_y", "right_z", "left_x", "left_y", "left_z", "space",
                                  "confidence_right", "confidence_left"]  # fmt: skip
    for row, case in zip(rows, cases, strict=True):
        image = nib.load(wide_cohort / case["image"])
        truth = (image.affine @ [*case["centroid_right"], 1.0])[:3]
        found = np.array([float(row[f"right_{a}"]) for a in "xyz"])
        assert float(row["error_right_mm"]) == pytest.approx(np.linalg.norm(found - truth), abs=2e-3)
    with open(tmp_path / "out" / "errors.csv") as handle:
        for error in csv.DictReader(handle):
            assert error["error"].startswith(f"{error['id']}: localiser: ") and "\n" not in error["error"]
    assert_predict_reads_dicom_like_nifti(wide_cohort / cases[0]["image"], tmp_path / "localiser.pt", tmp_path)


def assert_predict_reads_dicom_like_nifti(nifti, localiser, tmp_path) -> None:
    """``predict.py --image`` without centroids: the volume's DICOM series folder gives the same outcome (the
    localiser's centroids and SBRs, or the same one-line refusal) as its NIfTI file."""
    from bundle.method.networks import VGGRegressor3D

    torch.manual_seed(0)
    torch.save(VGGRegressor3D(channels=(2, 2, 2, 2)).state_dict(), tmp_path / "model.pt")
    image = nib.load(nifti)
    series = write_dicom_series(tmp_path / "series", np.asarray(image.dataobj), image.affine, seed=1)
    outcomes = []
    for source in (nifti, series):
        command = [sys.executable, "scripts/predict.py", "--image", str(source), "--ckpt", str(tmp_path / "model.pt"),
                   "--mc-samples", "0", "--localiser_path", str(localiser), "--network_def#channels", "[2,2,2,2]",
                   "--reports", "false"]  # fmt: skip
        result = subprocess.run(command, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
        lines = (result.stdout if result.returncode == 0 else result.stderr).strip().splitlines()
        assert result.returncode in (0, 1), result.stderr[-3000:]
        outcomes.append((result.returncode, lines[-3:] if result.returncode == 0 else lines[-1]))
    assert outcomes[0] == outcomes[1]
    code, said = outcomes[0]
    assert ("centroids: localiser" in said[0]) if code == 0 else said.startswith("error: patient: localiser: ")


def test_inference_localises_cases_without_centroids_and_goes_on_when_it_cannot(tiny_cohort, tmp_path):
    """A case without centroids needs the localiser; without one it is a one-line error and the others are
    predicted, each saying which centroids it used."""
    from monai.bundle import run

    from bundle.method.networks import VGGRegressor3D

    torch.manual_seed(0)
    torch.save(VGGRegressor3D(channels=(2, 2, 2, 2)).state_dict(), tmp_path / "model.pt")
    cases = json.loads((tiny_cohort / "datalist.json").read_text())["test"]
    unannotated = {k: v for k, v in cases[0].items() if not k.startswith("centroid")}
    (tmp_path / "datalist.json").write_text(json.dumps({"test": [unannotated, *cases[1:]]}))
    run("inference", config_file=str(REPO / "configs" / "inference.json"), bundle_root=str(REPO),
        dataset_dir=str(tiny_cohort), datalist=str(tmp_path / "datalist.json"), ckpt_path=str(tmp_path / "model.pt"),
        localiser_path=str(tmp_path / "absent.pt"), output_dir=str(tmp_path / "out"), mc_samples=0,
        reports=False, **{"network_def#channels": [2, 2, 2, 2]})  # fmt: skip
    with open(tmp_path / "out" / "errors.csv") as handle:
        message = f"{cases[0]['id']}: centroids: none given and no localiser (train one, or set --localiser_path)"
        assert list(csv.DictReader(handle)) == [{"id": cases[0]["id"], "error": message}]
    with open(tmp_path / "out" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["centroid_source"]) for r in rows] == [(c["id"], "annotated") for c in cases[1:]]
