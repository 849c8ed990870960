"""Every bad input of docs/data.md gives one line "{case_id}: {field}: ..." (ValueError / FileNotFoundError)."""

import gzip
import json
import logging

import nibabel as nib
import numpy as np
import pytest
import scipy.io
import torch
from subjects import reorder, save_nifti

from bundle.data import DivideByMeand, LoadNigralPatchesd, SBRTargetd, error_message
from bundle.data.datalist import load_cases, validate_case

SHAPE = (80, 70, 30)
AFFINE = np.diag([0.5, 0.5, 1.0, 1.0])
AFFINE[:3, 3] = [-20.0, -17.0, -15.0]
RIGHT, LEFT = (60, 33, 14), (19, 36, 15)  # voxel indices in RAS storage: the right nigra at larger x


def volume(shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(0).uniform(100, 200, shape).astype(np.float32)


def case(image, right=RIGHT, left=LEFT, **extra) -> dict:
    return {"id": "P1", "image": str(image), "centroid_right": list(right), "centroid_left": list(left),
            "centroid_space": "voxel", **extra}  # fmt: skip


@pytest.fixture
def good(tmp_path) -> str:
    return save_nifti(tmp_path / "good.nii.gz", volume(), AFFINE)


def message(data: dict, **kwargs) -> str:
    """The one-line error of LoadNigralPatchesd on ``data``."""
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        LoadNigralPatchesd(**kwargs)(data)
    text = error_message(info.value)
    assert "\n" not in text and text == str(info.value)
    return text


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        LoadNigralPatchesd()(case(tmp_path / "nope.nii.gz"))
    assert message(case(tmp_path / "nope.nii.gz")) == f"P1: image: file not found: {tmp_path / 'nope.nii.gz'}"


def test_corrupt_and_truncated_nifti(tmp_path, good):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header" * 30))
    assert message(case(garbage)).startswith("P1: image: cannot read garbage.nii.gz (")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(open(good, "rb").read()[:5000])
    assert message(case(truncated)).startswith("P1: image: cannot read truncated.nii.gz (")


@pytest.mark.parametrize(
    "shape, text",
    [((80, 70), "2D image of shape (80, 70)"), ((80, 70, 1), "2D image of shape (80, 70, 1)"),
     ((80, 70, 30, 3), "4D image of shape (80, 70, 30, 3)")],
)  # fmt: skip
def test_2d_and_4d_images(tmp_path, shape, text):
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), AFFINE), str(path))
    assert message(case(path)) == f"P1: image: {text}; need a single 3D volume"


def test_4d_with_a_single_volume_is_accepted(tmp_path):
    path = save_nifti(tmp_path / "t1.nii.gz", volume()[..., None], AFFINE)
    assert LoadNigralPatchesd()(case(path))["patch_left"].shape == (1, 50, 50, 20)


def test_centroid_outside_the_volume(good):
    text = message(case(good, left=(500, 36, 15)))
    assert text.startswith("P1: centroid_left: [500, 36, 15] (voxel) lies outside the volume")


def test_patch_mostly_outside_is_an_error_slightly_outside_is_padded_with_one_warning(good, caplog):
    assert message(case(good, left=(0, 36, 0))) == (
        "P1: centroid_left: 75% of the left patch lies outside the volume (more than 50%); check the centroid"
    )
    caplog.set_level(logging.WARNING, logger="bundle")
    out = LoadNigralPatchesd()(case(good, left=(3, 36, 15)))
    patch = out["patch_left"]
    assert torch.all(patch[0, :22] == 0) and torch.all(patch[0, 22:] > 0)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("bundle")]
    assert warnings == [
        "P1: centroid_right: 12% of the right patch outside the volume, zero-padded; "
        "centroid_left: 44% of the left patch outside the volume, zero-padded"
    ]


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_and_inf_voxels(tmp_path, value):
    vol = volume()
    vol[RIGHT[0] + 2, RIGHT[1], RIGHT[2]] = value
    vol[0, 0, 0] = value  # outside both patches: harmless
    path = save_nifti(tmp_path / "nan.nii.gz", vol, AFFINE)
    assert message(case(path)) == "P1: image: 1 NaN/Inf voxels in the right patch"


def test_zero_mean_patch_is_an_error_not_a_division_by_zero(tmp_path):
    vol = volume()
    vol[:45] = 0.0  # the subject's left half is empty
    path = save_nifti(tmp_path / "zero.nii.gz", vol, AFFINE)
    assert message(case(path)).startswith("P1: image: the left patch has mean intensity 0; cannot normalise by it")
    with pytest.raises(ValueError, match=r"^P7: patch_left: patch mean is 0"):
        DivideByMeand(["patch_left"])({"id": "P7", "patch_left": torch.zeros(1, 5, 5, 5)})


@pytest.mark.parametrize(
    "value, text",
    [(-0.5, "-0.5 is outside the plausible SBR range [0, 20]"), (25.0, "25 is outside the plausible SBR range [0, 20]"),
     ("4.1", "must be a number, got '4.1'"), (float("nan"), "nan is outside the plausible SBR range [0, 20]")],
)  # fmt: skip
def test_bad_sbr_values(good, value, text):
    assert message(case(good, sbr_right=3.0, sbr_left=value)) == f"P1: sbr_left: {text}"
    with pytest.raises(ValueError) as info:
        SBRTargetd()({"id": "P1", "sbr_right": 3.0, "sbr_left": value})
    assert str(info.value) == f"P1: sbr_left: {text}"


def test_sbr_missing_in_a_training_case(tmp_path, good):
    expected = "P1: sbr_left: missing; labelled cases need a number for both SBRs"
    assert message(case(good, sbr_right=3.0), require_sbr=True) == expected
    with pytest.raises(ValueError) as info:
        SBRTargetd()({"id": "P1", "sbr_right": 3.0})
    assert str(info.value) == expected
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [case(good, sbr_right=3.0)], "test": [dict(case(good), id="T1")]}))
    with pytest.raises(ValueError) as info:
        load_cases(datalist, "training", validate=True)
    assert str(info.value) == expected
    assert load_cases(datalist, "test", validate=True)[0]["id"] == "T1"  # SBRs are optional at inference


def test_load_cases_reports_all_problems_at_once(tmp_path, good):
    missing = dict(case(tmp_path / "x.nii.gz", sbr_right=3, sbr_left=3), id="P2")
    cases = [case(good, sbr_right=-1, sbr_left=3.0), missing]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": cases}))
    with pytest.raises(ValueError) as info:
        load_cases(datalist, "training", validate=True)
    assert str(info.value) == (
        "P1: sbr_right: -1 is outside the plausible SBR range [0, 20]; "
        f"P2: image: file not found: {tmp_path / 'x.nii.gz'}"
    )


def test_mat_with_wrong_keys_or_shapes(tmp_path):
    ones = np.ones((50, 50, 20))
    wrong_keys = tmp_path / "keys.mat"
    scipy.io.savemat(wrong_keys, {"right_patch": np.ones((50, 50, 20)), "left": np.ones((50, 50, 20))})
    expected = "P1: mat: keys.mat has no left_patch (found: ['left', 'right_patch'])"
    assert message({"id": "P1", "mat": str(wrong_keys)}) == expected
    flat = tmp_path / "flat.mat"
    scipy.io.savemat(flat, {"right_patch": np.ones((50, 50)), "left_patch": np.ones((50, 50, 20))})
    assert message({"id": "P1", "mat": str(flat)}) == "P1: mat: right_patch has shape (50, 50), expected 3D"
    small = tmp_path / "small.mat"
    scipy.io.savemat(small, {"right_patch": np.ones((40, 50, 20)), "left_patch": np.ones((40, 50, 20))})
    expected = "P1: mat: right_patch has shape (40, 50, 20), expected (50, 50, 20)"
    assert message({"id": "P1", "mat": str(small)}) == expected
    sbr = tmp_path / "sbr.mat"
    scipy.io.savemat(sbr, {"right_patch": ones, "left_patch": ones, "true_sbr": [1, 2, 3]})
    assert message({"id": "P1", "mat": str(sbr)}).startswith("P1: mat: true_sbr must hold 2 finite numbers")
    corrupt = tmp_path / "corrupt.mat"
    corrupt.write_bytes(b"\0" * 200)
    assert message({"id": "P1", "mat": str(corrupt)}).startswith("P1: mat: cannot read")
    assert message({"id": "P1", "mat": str(tmp_path / "none.mat")}).startswith("P1: mat: file not found")


def test_wrong_patch_file_shape_and_empty_patch(tmp_path):
    right = save_nifti(tmp_path / "r.nii.gz", volume((50, 50, 20)), AFFINE)
    small = save_nifti(tmp_path / "l.nii.gz", volume((40, 50, 20)), AFFINE)
    text = message({"id": "P1", "patch_right": right, "patch_left": small})
    assert text == "P1: patch_left: shape (40, 50, 20) in RAS order, expected (50, 50, 20)"
    empty = save_nifti(tmp_path / "e.nii.gz", np.zeros((50, 50, 20), np.float32), AFFINE)
    text = message({"id": "P1", "patch_right": right, "patch_left": empty})
    assert text.startswith("P1: patch_left: the left patch has mean intensity 0")


def test_duplicate_ids(tmp_path, good):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [case(good)], "test": [case(good)]}))
    with pytest.raises(ValueError) as info:
        load_cases(datalist, "test")
    assert str(info.value) == f"P1: id: duplicate id 'P1' in 'training' and 'test' (datalist {datalist})"


def test_identical_centroids(good):
    text = message(case(good, left=RIGHT))
    assert text.startswith("P1: centroid_left: identical to centroid_right [60.0, 33.0, 14.0]")


def test_swapped_centroids_are_detected_from_the_affine(tmp_path, good):
    text = message(case(good, right=LEFT, left=RIGHT))
    assert text == (
        "P1: centroid_right: lies 20.5 mm to the subject's left of centroid_left (scanner RAS x -10.5 vs 10.0 mm); "
        "right and left are likely swapped"
    )
    # LPS storage: the right nigra has the SMALLER array index along x, and that is correct
    vol, aff, to = reorder(volume(), AFFINE, flips=(True, True, False))
    lps = save_nifti(tmp_path / "lps.nii.gz", vol, aff)
    assert to(RIGHT)[0] < to(LEFT)[0]
    assert LoadNigralPatchesd()(case(lps, to(RIGHT), to(LEFT)))["patch_right"].shape == (1, 50, 50, 20)
    assert message(case(lps, to(LEFT), to(RIGHT))).startswith("P1: centroid_right: lies 20.5 mm to the subject's left")


def test_malformed_datalist(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": [{"id": "P1",}]}')
    with pytest.raises(ValueError) as info:
        load_cases(bad, "training")
    assert str(info.value).startswith(f"datalist {bad}: malformed JSON (") and str(info.value).endswith("at line 1)")


@pytest.mark.parametrize(
    "changes, text",
    [({"centroid_space": None}, "P1: centroid_space: must be 'voxel' or 'world', missing"),
     ({"centroid_space": "mm"}, "P1: centroid_space: must be 'voxel' or 'world', got 'mm'"),
     ({"centroid_left": [1, 2]}, "P1: centroid_left: must be 3 numbers [x, y, z], got [1, 2]"),
     ({"centroid_right": None}, "P1: centroid_right: missing"),
     ({"image": None}, "P1: image: no input; give 'image' (+ centroids), 'patch_right' + 'patch_left', or 'mat'"),
     ({"mat": "a.mat"}, "P1: mat: give one input form per case, not image and mat")],
)  # fmt: skip
def test_malformed_cases(good, changes, text):
    data = {k: v for k, v in {**case(good), **changes}.items() if v is not None}
    assert message(data) == text
    assert validate_case(data)[0] == text
