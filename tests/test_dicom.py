"""DICOM series written with pydicom from a demo subject (shuffled file order) and read back through the pipeline."""

import shutil

import numpy as np
import pydicom
import pytest
import torch
from subjects import demo_subject, reorder, world, write_dicom_series

from bundle.data import LoadNigralPatchesd, error_message
from bundle.data.readers import check_dicom_series, list_dicom_files


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_dicom_series(tmp_path_factory.mktemp("dicom") / "series", *demo_subject()[:2], seed=5)


@pytest.fixture
def copy(series, tmp_path):
    return shutil.copytree(series, tmp_path / "copy")


def case(folder, space: str = "world") -> dict:
    _, affine, right, left = demo_subject()
    if space == "world":
        right, left = world(affine, right), world(affine, left)
    else:  # (column, row, slice) as the readers stack the series: columns run to the subject's left
        _, _, to = reorder(*demo_subject()[:2], flips=(True, True, False))
        right, left = to(right), to(left)
    return {"id": "P1", "image": str(folder), "centroid_right": list(right), "centroid_left": list(left),
            "centroid_space": space}  # fmt: skip


def message(data: dict, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        LoadNigralPatchesd(**kwargs)(data)
    assert "\n" not in str(info.value)
    return error_message(info.value)


@pytest.mark.parametrize("reader", ["itk", "pydicom"])
def test_series_reads_back_as_the_volume_it_was_written_from(series, reader):
    volume, affine, _, _ = demo_subject()
    names = [p.name for p in list_dicom_files(series)]
    order = sorted(names, key=lambda n: int(pydicom.dcmread(series / n, stop_before_pixels=True).InstanceNumber))
    assert order != names  # the file names do not give the slice order
    loader = LoadNigralPatchesd(dicom_reader=reader)
    image = loader.orient(loader.load_volume("P1", "image", series))
    assert image.shape == (1, *volume.shape)
    assert np.array_equal(image[0].numpy(), volume.astype(np.float32))
    assert np.allclose(image.affine.numpy(), affine, atol=1e-4)
    by_world = loader(case(series))
    by_voxel = loader(case(series, "voxel"))
    assert all(torch.equal(by_world[k].as_tensor(), by_voxel[k].as_tensor()) for k in ("patch_right", "patch_left"))


def test_missing_slice(copy):
    files = sorted(list_dicom_files(copy), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    files[12].unlink()
    assert message(case(copy)) == (
        "P1: image: missing slice in the DICOM series: slices 11 and 12 are 2 mm apart, the others 1 mm"
    )


def test_mixed_orientations(copy):
    path = list_dicom_files(copy)[3]
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal slice in an axial series
    ds.save_as(path)
    expected = "P1: image: mixed slice orientations in DICOM series (2 ImageOrientationPatient values)"
    assert message(case(copy)) == expected


def test_two_series_in_one_folder(copy):
    path = list_dicom_files(copy)[0]
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path)
    assert message(case(copy)) == f"P1: image: {copy} mixes 2 DICOM series; keep one series per folder"


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert message(case(tmp_path / "empty")) == f"P1: image: no DICOM files in {tmp_path / 'empty'}"
    with pytest.raises(FileNotFoundError, match=r"^P1: image: DICOM folder not found"):
        check_dicom_series(tmp_path / "none", "P1")


def test_instance_numbers_out_of_position_order_are_refused_by_the_pydicom_reader_only(copy):
    for i, path in enumerate(list_dicom_files(copy)):  # file-name order, not position order
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = i + 1
        ds.save_as(path)
    assert message(case(copy), dicom_reader="pydicom") == (
        "P1: image: InstanceNumber does not follow the slice positions; read this series with the ITK reader"
    )
    assert LoadNigralPatchesd(dicom_reader="itk")(case(copy))["patch_left"].shape == (1, 50, 50, 20)
