"""scripts/make_datalist.py: CSV + image folder -> validated datalist JSON with a seeded patient-level split."""

import csv
import importlib.util
import json
import shutil

import pytest
import torch
from conftest import REPO
from subjects import demo_subject, save_nifti, world, write_dicom_series

from bundle.data import LoadNigralPatchesd
from bundle.data.datalist import load_cases

spec = importlib.util.spec_from_file_location("make_datalist", REPO / "scripts" / "make_datalist.py")
make_datalist = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_datalist)

COLUMNS = ["id", "right_x", "right_y", "right_z", "left_x", "left_y", "left_z", "space", "sbr_right", "sbr_left"]


def write_csv(path, rows: list[dict], columns=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(case_id: str, right=(60, 33, 14), left=(19, 36, 15), space="voxel", sbr=(3.1, 2.9), **extra) -> dict:
    values = dict(zip(COLUMNS[1:7], [*right, *left], strict=True))
    return {"id": case_id, **values, "space": space, "sbr_right": sbr[0], "sbr_left": sbr[1], **extra}


@pytest.fixture
def placeholders(tmp_path):
    """20 patients with placeholder image files (enough for split tests run with --skip-image-check)."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(20):
        (images / f"S{i:02d}.nii.gz").write_bytes(b"")
    rows = [row(f"S{i:02d}", sbr=(1 + i / 10, 1.5 + i / 10)) for i in range(20)]
    return images, write_csv(tmp_path / "cohort.csv", rows)


def build(images, table, output, *extra: str) -> int:
    return make_datalist.main(["--images", str(images), "--csv", str(table), "--output", str(output), *extra])


def ids(cases) -> list[str]:
    return [c["id"] for c in cases]


def test_seeded_patient_level_split(placeholders, tmp_path):
    images, table = placeholders
    assert build(images, table, tmp_path / "a.json", "--skip-image-check") == 0
    datalist = json.loads((tmp_path / "a.json").read_text())
    sizes = {name: len(section) for name, section in datalist.items()}
    assert sizes == {"training": 14, "validation": 3, "test": 3}
    assert sorted(sum((ids(s) for s in datalist.values()), [])) == [f"S{i:02d}" for i in range(20)]
    first = datalist["training"][0]
    assert first["image"] == f"{first['id']}.nii.gz" and first["centroid_space"] == "voxel"
    assert first["centroid_right"] == [60.0, 33.0, 14.0] and isinstance(first["sbr_left"], float)
    assert load_cases(tmp_path / "a.json", "training", images)[0]["image"] == str(images / first["image"])

    build(images, table, tmp_path / "b.json", "--skip-image-check")
    build(images, table, tmp_path / "c.json", "--skip-image-check", "--seed", "1")
    assert (tmp_path / "b.json").read_text() == (tmp_path / "a.json").read_text()
    assert (tmp_path / "c.json").read_text() != (tmp_path / "a.json").read_text()


def test_kfold_lists(placeholders, tmp_path):
    images, table = placeholders
    assert build(images, table, tmp_path / "cv.json", "--skip-image-check", "--kfold", "4") == 0
    folds = [json.loads((tmp_path / f"cv_fold{k}.json").read_text()) for k in range(4)]
    test = ids(folds[0]["test"])
    assert len(test) == 3 and all(ids(f["test"]) == test for f in folds)
    validation = [ids(f["validation"]) for f in folds]
    assert sorted(sum(validation, [])) == sorted(set(f"S{i:02d}" for i in range(20)) - set(test))
    for k, f in enumerate(folds):
        assert not set(ids(f["training"])) & set(validation[k]) and not set(ids(f["training"])) & set(test)
        assert {c["fold"] for c in f["validation"]} == {k} and k not in {c["fold"] for c in f["training"]}


def test_fold_column_is_used(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    folds = ["0", "1", "2", "test", "0", "1", "2", "test", "0", "1"]
    for i in range(len(folds)):
        (images / f"S{i}.nii.gz").write_bytes(b"")
    table = write_csv(tmp_path / "f.csv", [row(f"S{i}", fold=f) for i, f in enumerate(folds)], [*COLUMNS, "fold"])
    assert build(images, table, tmp_path / "cv.json", "--skip-image-check") == 0
    fold1 = json.loads((tmp_path / "cv_fold1.json").read_text())
    assert ids(fold1["validation"]) == ["S1", "S5", "S9"] and ids(fold1["test"]) == ["S3", "S7"]
    assert not (tmp_path / "cv_fold3.json").exists()


def test_every_problem_is_reported_at_once_and_nothing_is_written(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("A", "B", "C", "D", "E", "F", "G"):
        (images / f"{name}.nii.gz").write_bytes(b"")
    rows = [
        row("A", right=("60", "x", 14)),
        row("B", space="mm"),
        row("C", sbr=(-1, 2)),
        row("D", sbr=("abc", "")),
        row("E", left=(60, 33, 14)),
        row("A"),
        row("H"),
        row("", sbr=(2, 2)),
        row("F", fold="x"),
    ]
    table = write_csv(tmp_path / "bad.csv", rows, [*COLUMNS, "fold"])
    assert build(images, table, tmp_path / "out.json", "--skip-image-check") == 1
    assert not (tmp_path / "out.json").exists()
    assert capsys.readouterr().err.splitlines() == [
        "A: right_y: not a finite number: 'x'",
        "B: centroid_space: must be 'voxel' or 'world', got 'mm'",
        "C: sbr_right: -1 is outside the plausible SBR range [0, 20]",
        "D: sbr_right: must be a number, got 'abc'",
        "D: sbr_left: missing; labelled cases need a number for both SBRs",
        "E: centroid_left: identical to centroid_right [60.0, 33.0, 14.0]; give the two nigrosome-1 centroids",
        "A: id: duplicate (lines 2 and 7)",
        f"H: image: no H.nii.gz, H.nii or DICOM folder H/ in {images}",
        "line 9: id: missing",
        "F: fold: must be a non-negative integer or 'test', got 'x'",
        "10 problem(s); no datalist written",
    ]


def test_images_are_checked_through_the_pipeline(tmp_path, capsys):
    volume, affine, right, left = demo_subject()
    images = tmp_path / "images"
    save_nifti(images.mkdir() or images / "A.nii.gz", volume, affine)
    write_dicom_series(images / "B", volume, affine)
    shutil.copy(images / "A.nii.gz", images / "C.nii.gz")
    shutil.copy(images / "A.nii.gz", images / "D.nii.gz")
    rows = [
        row("A", right, left),
        row("B", world(affine, right), world(affine, left), space="world"),
        row("C", left, right),  # swapped
        row("D", right, (left[0], left[1], 400)),  # outside the volume
    ]
    table = write_csv(tmp_path / "cohort.csv", rows)
    assert build(images, table, tmp_path / "out.json") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("C: centroid_right: lies ") and err[0].endswith("right and left are likely swapped")
    assert err[1].startswith("D: centroid_left: ") and "lies outside the volume" in err[1]
    assert len(err) == 3

    write_csv(table, rows[:2])
    assert build(images, table, tmp_path / "out.json", "--unlabelled") == 0
    cases = load_cases(tmp_path / "out.json", "test", images)
    assert ids(cases) == ["A", "B"] and cases[1]["image"] == str(images / "B")
    a, b = (LoadNigralPatchesd()(c) for c in cases)
    assert torch.equal(a["patch_left"].as_tensor(), b["patch_left"].as_tensor())
