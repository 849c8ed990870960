"""Patch extraction, mirroring and normalisation of the data pipeline."""

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

from bundle.data import DivideByMeand, ExtractNigralPatchesd, SBRTargetd

SHAPE = (80, 70, 30)
RAS_AFFINE = np.diag([0.5, 0.5, 1.0, 1.0])
RAS_AFFINE[:3, 3] = [-20.0, -17.0, -15.0]
RIGHT, LEFT = (60, 33, 14), (19, 36, 15)  # voxel indices in RAS storage; right nigra at larger x


def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    vol = rng.uniform(100, 200, SHAPE).astype(np.float32)
    vol[RIGHT] = 1000.0  # markers at the centroids
    vol[LEFT] = 2000.0
    vol[RIGHT[0] - 3, RIGHT[1], RIGHT[2]] = 3000.0  # 3 voxels medial of the right centroid (towards the midline)
    vol[LEFT[0] + 3, LEFT[1], LEFT[2]] = 4000.0  # 3 voxels medial of the left centroid
    return vol


def save(tmp_path, data: np.ndarray, affine: np.ndarray, name: str) -> str:
    path = str(tmp_path / name)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def pipeline(**kwargs) -> Compose:
    return Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS", labels=None),
            ExtractNigralPatchesd("image", **kwargs),
        ]
    )


def case(path: str, right=RIGHT, left=LEFT, space="voxel") -> dict:
    return {
        "id": "P1",
        "image": path,
        "centroid_right": list(right),
        "centroid_left": list(left),
        "centroid_space": space,
    }


def world(affine: np.ndarray, index) -> list[float]:
    return (affine @ np.append(np.asarray(index, float), 1.0))[:3].tolist()


@pytest.fixture
def ras_file(tmp_path):
    return save(tmp_path, volume(), RAS_AFFINE, "ras.nii.gz")


def test_centroid_lands_at_size_half_on_both_sides(ras_file):
    out = pipeline()(case(ras_file))
    right, left = out["patch_right"], out["patch_left"]
    assert right.shape == left.shape == (1, 50, 50, 20)
    assert right[0, 25, 25, 10] == 1000.0
    assert left[0, 25, 25, 10] == 2000.0


def test_right_patch_is_mirrored_to_look_like_a_left_nigra(ras_file):
    out = pipeline()(case(ras_file))
    # medial markers: in the left patch medial is +x (index 28); the mirrored right patch must agree
    assert out["patch_left"][0, 28, 25, 10] == 4000.0
    assert out["patch_right"][0, 28, 25, 10] == 3000.0
    unmirrored = pipeline(mirror_right=False)(case(ras_file))["patch_right"]
    assert unmirrored[0, 22, 25, 10] == 3000.0  # unmirrored right: medial is -x


def test_mirror_twice_is_identity(ras_file):
    mirrored = pipeline()(case(ras_file))["patch_right"]
    flip = ExtractNigralPatchesd("image").flip
    assert torch.equal(flip(flip(mirrored)).as_tensor(), mirrored.as_tensor())
    native = flip(mirrored)  # back in the subject's orientation: centroid at 24, medial marker 3 voxels to the left
    assert native[0, 24, 25, 10] == 1000.0 and native[0, 21, 25, 10] == 3000.0


def test_world_and_voxel_centroids_give_identical_patches(ras_file):
    by_voxel = pipeline()(case(ras_file))
    by_world = pipeline()(case(ras_file, world(RAS_AFFINE, RIGHT), world(RAS_AFFINE, LEFT), "world"))
    for key in ("patch_right", "patch_left"):
        assert torch.equal(by_voxel[key], by_world[key])


def test_lps_storage_gives_identical_patches(tmp_path, ras_file):
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [SHAPE[0] - 1, SHAPE[1] - 1]
    lps_affine = RAS_AFFINE @ flip  # same world positions, x and y stored reversed
    lps_file = save(tmp_path, volume()[::-1, ::-1, :].copy(), lps_affine, "lps.nii.gz")
    lps_index = lambda i: (SHAPE[0] - 1 - i[0], SHAPE[1] - 1 - i[1], i[2])  # noqa: E731
    ref = pipeline()(case(ras_file))
    out = pipeline()(case(lps_file, lps_index(RIGHT), lps_index(LEFT)))
    for key in ("patch_right", "patch_left"):
        assert torch.equal(ref[key].as_tensor(), out[key].as_tensor())


def test_margin_enlarges_the_patch_around_the_same_centre(ras_file):
    out = pipeline(margin=2)(case(ras_file))
    assert out["patch_left"].shape == (1, 54, 54, 24)
    assert out["patch_left"][0, 27, 27, 12] == 2000.0
    assert out["patch_right"][0, 27, 27, 12] == 1000.0


def test_border_is_zero_padded(ras_file):
    near_edge = (3, 36, 15)
    patch = pipeline()(case(ras_file, RIGHT, near_edge))["patch_left"]
    assert patch.shape == (1, 50, 50, 20)
    assert torch.all(patch[0, :22] == 0) and torch.all(patch[0, 22:] > 0)


def pipeline_error(data: dict) -> str:
    """The one-line message of the transform that failed (Compose wraps it in a RuntimeError)."""
    with pytest.raises(RuntimeError) as info:
        pipeline()(data)
    assert isinstance(info.value.__cause__, ValueError)
    return str(info.value.__cause__)


def test_centroid_outside_the_volume_names_the_case(ras_file):
    message = pipeline_error(case(ras_file, RIGHT, (500, 36, 15)))
    assert message.startswith("P1: centroid_left: ") and "outside" in message


def test_bad_centroid_space_names_the_case(ras_file):
    assert pipeline_error(case(ras_file, space="mm")).startswith("P1: centroid_right: centroid_space")


def test_divide_by_mean_gives_unit_mean():
    out = DivideByMeand(["a"])({"a": torch.rand(1, 5, 5, 5) + 1.0})
    assert out["a"].mean().item() == pytest.approx(1.0, rel=1e-6)


def test_zero_mean_patch_is_an_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match=r"P7: a: patch mean is 0"):
        DivideByMeand(["a"])({"id": "P7", "a": torch.zeros(1, 5, 5, 5)})


def test_sbr_target_is_normalised_right_then_left():
    out = SBRTargetd(sbr_max=6.84)({"sbr_right": 3.42, "sbr_left": 6.84})
    assert torch.allclose(out["label"], torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize(
    "value, message", [(-1.0, "plausible"), (25.0, "plausible"), ("4.1", "number"), (None, "number")]
)
def test_bad_sbr_values_name_the_case_and_field(value, message):
    with pytest.raises(ValueError, match=rf"P3: sbr_left.*{message}"):
        SBRTargetd()({"id": "P3", "sbr_right": 3.0, "sbr_left": value})


def test_missing_sbr_is_allowed_at_inference():
    out = SBRTargetd(allow_missing_keys=True)({"id": "P3"})
    assert "label" not in out
