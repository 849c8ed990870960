"""The MONAI Label infer task through MONAI Label's own task API (label extra): clicks are the centroids."""

import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, bundle_env, require_extra
from subjects import demo_subject, save_nifti, tiny_model

InferType = require_extra("monailabel.interfaces.tasks.infer_v2", "label").InferType
sbr_task = require_extra("apps.label.sbr_task", "label")
LABELS, SBRInferTask, clicks_to_centroids = sbr_task.LABELS, sbr_task.SBRInferTask, sbr_task.clicks_to_centroids


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    volume, affine, right, left = demo_subject()
    image = save_nifti(root / "subject01.nii.gz", volume, affine)
    tiny_model(root / "models" / "model.pt")
    return root, image, right, left


@pytest.fixture(scope="module")
def task(subject):
    return SBRInferTask(models=subject[0] / "models", mc_samples=20)


def test_the_task_describes_itself_as_monai_label_expects(task):
    assert task.type == InferType.CLASSIFICATION and task.dimension == 3 and task.is_valid()
    info = task.info()
    assert info["labels"] == LABELS and "research use" in info["description"]


def test_two_clicks_give_both_sbrs_with_intervals_equal_to_the_bundles(subject, task, tmp_path):
    root, image, right, left = subject
    # left click first: the side is read from the clicks' world position, not their order
    label_file, result = task({"image": image, "foreground": [left.tolist(), right.tolist()], "device": "cpu"})
    cmd = [sys.executable, "scripts/predict.py", "--image", image, "--right", *map(str, right), "--left",
           *map(str, left), "--ckpt", str(root / "models" / "model.pt"), "--mc-samples", "20",
           "--output-dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "predictions.csv") as f:
        (row,) = csv.DictReader(f)
    assert result["centroid_source"] == "clicks" and result["research_use_only"] is True
    for side in ("right", "left"):
        low, high = result[side]["interval"]
        assert low <= result[side]["sbr"] <= high
        assert result[side]["sbr"] == pytest.approx(float(row[f"sbr_{side}"]), abs=1e-6)
        assert [low, high] == pytest.approx([float(row[f"low_{side}"]), float(row[f"high_{side}"])], abs=1e-6)
        assert result[side]["abnormal"] == (row[f"abnormal_{side}"] == "1")
    assert result["centroids"] == {"right nigral patch": [str(int(v)) for v in right],
                                   "left nigral patch": [str(int(v)) for v in left]}  # fmt: skip

    label = nib.load(label_file)
    source = nib.load(image)
    assert label.shape == source.shape and np.allclose(label.affine, source.affine)
    data = np.asarray(label.dataobj)
    assert set(np.unique(data)) == {0, 1, 2, 3}  # 3: where the two patches overlap
    for value, click in ((1, right), (2, left)):
        voxels = np.argwhere((data & value) > 0)
        assert len(voxels) == 50 * 50 * 20  # the patch: 50 x 50 x 20 voxels on this 0.5 x 0.5 x 1 mm grid
        assert np.allclose(voxels.mean(axis=0), click, atol=0.6)


def test_clicks_are_assigned_by_world_position_and_must_be_two():
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # index x grows toward the subject's left (LAS storage)
    found = clicks_to_centroids([[40, 0, 0], [10, 0, 0]], flipped)
    assert found == {"right": [-10.0, 0.0, 0.0], "left": [-40.0, 0.0, 0.0]}  # RAS: x grows toward the right
    with pytest.raises(ValueError, match=r"^clicks: give two points \(right and left nigrosome-1\), got 1$"):
        clicks_to_centroids([[1, 2, 3]], np.eye(4))


def test_no_clicks_and_no_localiser_is_a_one_line_error_naming_the_case(subject, task):
    with pytest.raises(ValueError) as err:
        task({"image": subject[1], "device": "cpu"})
    message = str(err.value)
    assert message.startswith("subject01: ") and "localiser" in message and "\n" not in message
