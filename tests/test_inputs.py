"""Real inputs (docs/data.md): the same subject however it is stored, centring, spacing, .mat pairs, patch files."""

import csv
import json
import logging

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from conftest import REPO
from monai.bundle import run
from monai.transforms import Compose, Flip
from subjects import demo_subject, reorder, save_nifti, world, write_dicom_series

from bundle.data import DivideByMeand, LoadNigralPatchesd, error_message
from bundle.data.loading import MAT_SBR_MAX
from bundle.method.networks import VGGRegressor3D

PATCHES = ("patch_right", "patch_left")
SBR = (4.2, 2.1)  # the demo subject's right / left SBR


def volume_case(case_id: str, image: str, right, left, space: str = "voxel", **extra) -> dict:
    return {
        "id": case_id, "image": image, "centroid_right": [float(v) for v in right],
        "centroid_left": [float(v) for v in left], "centroid_space": space, **extra,
    }  # fmt: skip


def to_pls(array: np.ndarray) -> np.ndarray:
    """RAS-ordered array -> MATLAB-style layout: rows to posterior, columns to the subject's left, slices up."""
    return np.ascontiguousarray(array.transpose(1, 0, 2)[::-1, ::-1, :])


def save_mat(path, right: np.ndarray, left: np.ndarray, v73: bool = False, **extra) -> str:
    """A patch pair in the original release's format (MATLAB v5, or v7.3 = HDF5 with MATLAB's transposed arrays)."""
    arrays = {"right_patch": right, "left_patch": left, **extra}
    if v73:
        with h5py.File(path, "w", userblock_size=512) as f:
            for key, value in arrays.items():
                f[key] = np.asarray(value, dtype=np.float64).T
    else:
        scipy.io.savemat(path, arrays)
    return str(path)


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k].as_tensor(), b[k].as_tensor()) for k in PATCHES)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict:
    """The demo subject as NIfTI RAS / LPS / permuted axes / DICOM series, as patch files and as .mat pairs."""
    out = tmp_path_factory.mktemp("stored")
    vol, aff, right, left = demo_subject()
    sbr = {"sbr_right": SBR[0], "sbr_left": SBR[1]}
    cases = {"ras": volume_case("ras", save_nifti(out / "ras.nii.gz", vol, aff), right, left, **sbr)}
    v, a, to = reorder(vol, aff, flips=(True, True, False))
    cases["lps"] = volume_case("lps", save_nifti(out / "lps.nii.gz", v, a), to(right), to(left), **sbr)
    v, a, to = reorder(vol, aff, axes=(2, 0, 1), flips=(False, True, True))
    cases["permuted"] = volume_case("permuted", save_nifti(out / "perm.nii.gz", v, a), to(right), to(left), **sbr)
    dicom = str(write_dicom_series(out / "dicom", vol, aff, seed=3))
    cases["dicom"] = volume_case("dicom", dicom, world(aff, right), world(aff, left), "world", **sbr)

    reference = LoadNigralPatchesd()(cases["ras"])
    native_right = Flip(spatial_axis=0)(reference["patch_right"])  # the right patch as stored: not mirrored
    native_left = reference["patch_left"]
    files = {}
    for side, patch in (("right", native_right), ("left", native_left)):
        array, affine = patch[0].numpy(), patch.affine.numpy()
        files[f"patch_{side}"] = save_nifti(out / f"{side}_ras.nii.gz", array, affine)
        lps_array, lps_affine, _ = reorder(array, affine, flips=(True, True, False))
        files[f"lps_{side}"] = save_nifti(out / f"{side}_lps.nii.gz", lps_array, lps_affine)
    cases["patches"] = {"id": "patches", "patch_right": files["patch_right"], "patch_left": files["patch_left"], **sbr}
    cases["patches_lps"] = {"id": "patches_lps", "patch_right": files["lps_right"], "patch_left": files["lps_left"]}

    true_sbr = np.array([SBR]) / MAT_SBR_MAX
    r, l_ = native_right[0].numpy(), native_left[0].numpy()
    cases["mat_pls"] = {"id": "mat_pls", "mat": save_mat(out / "pls.mat", to_pls(r), to_pls(l_), true_sbr=true_sbr)}
    cases["mat_pls_v73"] = {
        "id": "mat_pls_v73", "mat": save_mat(out / "pls73.mat", to_pls(r), to_pls(l_), v73=True, true_sbr=true_sbr)
    }  # fmt: skip
    cases["mat_ras"] = {"id": "mat_ras", "mat": save_mat(out / "ras.mat", r, l_)}
    return cases


def test_four_storages_give_identical_patches(stored):
    reference = LoadNigralPatchesd()(stored["ras"])
    assert reference["patch_right"].shape == reference["patch_left"].shape == (1, 50, 50, 20)
    assert "image" not in reference
    for name in ("lps", "permuted", "dicom"):
        assert same(LoadNigralPatchesd()(stored[name]), reference), name
    assert same(LoadNigralPatchesd(dicom_reader="pydicom")(stored["dicom"]), reference)


def test_world_and_voxel_centroids_give_identical_patches_whatever_the_storage(stored):
    vol, aff, right, left = demo_subject()
    for name in ("lps", "permuted"):
        by_world = dict(stored[name], centroid_right=world(aff, right), centroid_left=world(aff, left))
        assert same(LoadNigralPatchesd()(dict(by_world, centroid_space="world")), LoadNigralPatchesd()(stored[name]))


def test_patch_files_equal_the_full_volume_crop(stored):
    reference = LoadNigralPatchesd()(stored["ras"])
    assert same(LoadNigralPatchesd()(stored["patches"]), reference)
    assert same(LoadNigralPatchesd()(stored["patches_lps"]), reference)  # reoriented to RAS before mirroring


def test_pre_cropped_patches_get_an_edge_replicated_margin(stored):
    plain = LoadNigralPatchesd()(stored["patches"])
    padded = LoadNigralPatchesd(margin=2)(stored["patches"])
    for key in PATCHES:
        assert padded[key].shape == (1, 54, 54, 24)
        assert torch.equal(padded[key][:, 2:52, 2:52, 2:22].as_tensor(), plain[key].as_tensor())
        assert torch.equal(padded[key][:, 0, 2:52, 2:22].as_tensor(), plain[key][:, 0].as_tensor())
    full = LoadNigralPatchesd(margin=2)(stored["ras"])  # full volumes: the margin holds real neighbouring voxels
    assert torch.equal(full["patch_left"][:, 2:52, 2:52, 2:22].as_tensor(), plain["patch_left"].as_tensor())


def test_mat_in_the_release_layout_is_mirrored_like_the_release(stored):
    """Stored order, right patch flipped along array axis 1 (``np.flip(right_patch, axis=1)`` in the release)."""
    raw = scipy.io.loadmat(stored["mat_pls"]["mat"])
    out = LoadNigralPatchesd()(stored["mat_pls"])
    assert np.array_equal(out["patch_right"][0].numpy(), np.flip(raw["right_patch"], axis=1))
    assert np.array_equal(out["patch_left"][0].numpy(), raw["left_patch"])
    assert out["sbr_right"] == pytest.approx(SBR[0]) and out["sbr_left"] == pytest.approx(SBR[1])
    assert same(LoadNigralPatchesd()(stored["mat_pls_v73"]), out)  # MATLAB v7.3 (HDF5) reads the same


def test_mat_reoriented_from_its_layout_equals_the_nifti_patch_case(stored):
    reference = LoadNigralPatchesd()(stored["patches"])
    assert same(LoadNigralPatchesd(mat_axcodes="PLS")(stored["mat_pls"]), reference)
    assert same(LoadNigralPatchesd(mat_lr_axis=0)(stored["mat_ras"]), reference)
    case_sbr = LoadNigralPatchesd()(dict(stored["mat_pls"], sbr_right=1.5))  # the datalist's SBR wins
    assert case_sbr["sbr_right"] == 1.5 and case_sbr["sbr_left"] == pytest.approx(SBR[1])


def _tiny_checkpoint(path) -> VGGRegressor3D:
    torch.manual_seed(0)
    net = VGGRegressor3D(channels=(4, 4, 4, 4))
    torch.save(net.state_dict(), path)
    return net.eval()


def test_all_storages_give_identical_predictions_through_inference_and_a_bad_case_is_skipped(stored, tmp_path):
    """configs/inference.json on every form of the subject plus two bad cases: equal rows, errors.csv for the bad."""
    good = ["ras", "lps", "permuted", "dicom", "patches", "patches_lps", "mat_pls", "mat_pls_v73"]
    broken = dict(stored["ras"], id="BROKEN", image=str(tmp_path / "missing.nii.gz"))
    swapped = dict(stored["ras"], id="SWAPPED", centroid_right=stored["ras"]["centroid_left"],
                   centroid_left=stored["ras"]["centroid_right"])  # fmt: skip
    cases = [stored[name] for name in good[:2]] + [broken] + [stored[name] for name in good[2:]] + [swapped]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": cases}))
    net = _tiny_checkpoint(tmp_path / "model.pt")
    run(
        "inference", config_file=str(REPO / "configs" / "inference.json"), bundle_root=str(REPO),
        datalist=str(datalist), dataset_dir=str(tmp_path), ckpt_path=str(tmp_path / "model.pt"),
        output_dir=str(tmp_path / "out"), mc_samples=0, amp=False, reports=False, batch_size=1,
        **{"network_def#channels": [4, 4, 4, 4], "mat_axcodes": "PLS"},
    )  # fmt: skip
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    with open(tmp_path / "out" / "errors.csv") as f:
        errors = {row["id"]: row["error"] for row in csv.DictReader(f)}
    assert sorted(rows) == sorted(good)
    assert sorted(errors) == ["BROKEN", "SWAPPED"]
    assert errors["BROKEN"].startswith("BROKEN: image: file not found")
    assert errors["SWAPPED"].startswith("SWAPPED: centroid_right: ") and "swapped" in errors["SWAPPED"]

    def predict(case: dict) -> np.ndarray:
        pair = DivideByMeand(PATCHES)(LoadNigralPatchesd(mat_axcodes="PLS")(case))
        with torch.no_grad():
            return net(torch.stack([pair[k].as_tensor() for k in PATCHES])).ravel().numpy() * 6.84

    expected = predict(stored["ras"])
    for name in good:  # predictions.csv holds 4 decimals; the network outputs themselves agree to 1e-5
        assert [rows[name][k] for k in ("sbr_right", "sbr_left")] == [rows["ras"][k] for k in ("sbr_right", "sbr_left")]
        assert np.allclose([float(rows[name][k]) for k in ("sbr_right", "sbr_left")], expected, atol=5e-5, rtol=0)
        assert np.abs(predict(stored[name]) - expected).max() <= 1e-5, name


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about scanner axis ``axis`` (0 = x, 2 = z)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_oblique_storage_is_handled_through_the_affine(tmp_path):
    vol, aff, right, left = demo_subject()
    oblique = aff.copy()
    oblique[:3, :3] = rotation(2, 15.0) @ rotation(0, 8.0) @ aff[:3, :3]  # yaw 15 deg, pitch 8 deg
    ras = volume_case("obl", save_nifti(tmp_path / "obl.nii.gz", vol, oblique), right, left)
    v, a, to = reorder(vol, oblique, axes=(1, 0, 2), flips=(True, False, True))
    other = volume_case("obl", save_nifti(tmp_path / "obl_perm.nii.gz", v, a), to(right), to(left))
    by_world = volume_case("obl", ras["image"], world(oblique, right), world(oblique, left), "world")
    reference = LoadNigralPatchesd()(ras)
    assert same(LoadNigralPatchesd()(other), reference) and same(LoadNigralPatchesd()(by_world), reference)
    assert reference["patch_left"][0, 25, 25, 10] == float(vol[tuple(left)])

    too_oblique = aff.copy()
    too_oblique[:3, :3] = rotation(2, 40.0) @ aff[:3, :3]
    case = volume_case("P9", save_nifti(tmp_path / "yaw40.nii.gz", vol, too_oblique), right, left)
    with pytest.raises(ValueError, match=r"^P9: image: the array's left-right axis is 40 deg oblique"):
        LoadNigralPatchesd()(case)


def linear_volume(tmp_path, spacing, shape=(80, 80, 40)):
    """Intensity = a linear function of scanner mm, so that any interpolated value is known exactly."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -0.5 * np.asarray(spacing) * (np.asarray(shape) - 1) + [0.3, -0.2, 0.1]
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    mm = index @ affine[:3, :3].T + affine[:3, 3]
    volume = (100.0 + mm @ np.array([1.0, 2.0, 3.0])).astype(np.float32)
    return save_nifti(tmp_path / f"linear_{spacing[0]}.nii.gz", volume, affine), lambda p: 100.0 + np.dot(p, [1, 2, 3])


@pytest.fixture
def bundle_log(caplog):
    caplog.set_level(logging.WARNING, logger="bundle")
    return caplog


def test_off_spacing_is_resampled_exactly_centred_and_logged_once(tmp_path, bundle_log):
    path, intensity = linear_volume(tmp_path, (0.6, 0.6, 1.2))
    right, left = [6.07, 1.31, -0.77], [-5.93, 0.52, 0.4]  # world mm, not on voxel centres
    out = LoadNigralPatchesd()(volume_case("P5", path, right, left, "world"))
    assert out["patch_left"].shape == (1, 50, 50, 20)
    assert out["patch_left"][0, 25, 25, 10].item() == pytest.approx(intensity(left), abs=1e-3)
    assert out["patch_left"][0, 26, 25, 10].item() == pytest.approx(intensity(np.add(left, [0.5, 0, 0])), abs=1e-3)
    assert out["patch_right"][0, 25, 25, 10].item() == pytest.approx(intensity(right), abs=1e-3)
    # mirrored: one voxel up the right patch's axis 0 is 0.5 mm to the subject's LEFT (-x)
    assert out["patch_right"][0, 26, 25, 10].item() == pytest.approx(intensity(np.add(right, [-0.5, 0, 0])), abs=1e-3)
    assert out["patch_left"][0, 25, 25, 11].item() == pytest.approx(intensity(np.add(left, [0, 0, 1.0])), abs=1e-3)
    records = [r for r in bundle_log.records if r.name.startswith("bundle")]
    assert len(records) == 1 and records[0].getMessage().startswith("P5: image: voxel size [0.6, 0.6, 1.2] mm")
    assert "resampled" in records[0].getMessage()

    bundle_log.clear()
    native = LoadNigralPatchesd(resample=False)(volume_case("P5", path, right, left, "world"))
    assert native["patch_left"].shape == (1, 50, 50, 20)
    assert [r.getMessage() for r in bundle_log.records if "NOT resampled" in r.getMessage()]


def test_spacing_within_tolerance_is_not_resampled(tmp_path, bundle_log):
    path, _ = linear_volume(tmp_path, (0.52, 0.49, 1.04))
    out = LoadNigralPatchesd()(volume_case("P6", path, [6.0, 1.0, 0.0], [-6.0, 1.0, 0.0], "world"))
    assert np.allclose(np.linalg.norm(out["patch_left"].affine[:3, :3].numpy(), axis=0), [0.52, 0.49, 1.04])
    assert not [r for r in bundle_log.records if r.name.startswith("bundle")]


def test_error_message_unwraps_monai_compose(stored, tmp_path):
    case = dict(stored["ras"], id="P8", image=str(tmp_path / "gone.nii.gz"))
    with pytest.raises(RuntimeError) as info:
        Compose([LoadNigralPatchesd(), DivideByMeand(PATCHES)])(case)
    assert error_message(info.value) == f"P8: image: file not found: {tmp_path / 'gone.nii.gz'}"
    assert error_message(KeyError("x")) == "KeyError: 'x'"
