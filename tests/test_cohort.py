"""The synthetic cohort: label statistics, image signal, file format, determinism and atomic writes."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bundle.synthetic import smwi_cohort as cohort
from bundle.synthetic.smwi_cohort import (
    SBR_MAX,
    ensure_demo_cohort,
    generate_cohort,
    render_subject,
    sample_labels,
    simulate_subject,
)

PATCH = np.array([50, 50, 20])


def _patch(volume: np.ndarray, centroid) -> np.ndarray:
    """The regressor's 50x50x20 patch centred on ``centroid`` (as float)."""
    low = np.asarray(centroid) - PATCH // 2
    return volume[low[0] : low[0] + 50, low[1] : low[1] + 50, low[2] : low[2] + 20].astype(np.float64)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def _r2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1] ** 2)


def _volumes(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted((out / "smwi").glob("*.nii.gz"))}


# 1. labels ---------------------------------------------------------------------------------------------------------


def test_label_statistics_match_the_clinical_cohort():
    labels = sample_labels(2000, np.random.default_rng(0))
    right, left, is_pd = labels["sbr_right"], labels["sbr_left"], labels["is_pd"]
    assert is_pd.dtype == bool and right.shape == left.shape == is_pd.shape == (2000,)
    assert abs(is_pd.mean() - 0.78) < 0.06
    patient = (right + left) / 2
    assert abs(patient[is_pd].mean() - 2.3) < 0.25
    assert abs(patient[~is_pd].mean() - 4.3) < 0.25
    assert abs(np.corrcoef(right, left)[0, 1] - 0.93) < 0.03
    assert right.min() >= 0.43 and left.min() >= 0.43 and max(right.max(), left.max()) <= SBR_MAX
    assert np.array_equal(right, np.round(right, 3))


# 4./5. image signal and leakage --------------------------------------------------------------------------------------


def _signal_rows(sbr_right: np.ndarray, sbr_left: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per side: SBR, true visibility and three image features (ROI contrast, raw patch mean, centre voxel)."""
    rows = []
    for i, seq in enumerate(np.random.SeedSequence(seed).spawn(len(sbr_right))):
        s = simulate_subject(sbr_right[i], sbr_left[i], np.random.default_rng(seq))
        for sbr, centroid, truth, visibility in (
            (sbr_right[i], s.centroid_right, s.nigrosome_right, s.visibility_right),
            (sbr_left[i], s.centroid_left, s.nigrosome_left, s.visibility_left),
        ):
            patch = _patch(s.volume, centroid)
            t = np.rint(truth).astype(int)
            roi = s.volume[t[0] - 1 : t[0] + 2, t[1] - 1 : t[1] + 2, t[2] - 1 : t[2] + 2].mean()
            rows.append((sbr, visibility, roi / patch.mean(), patch.mean(), patch[25, 25, 10] / patch.mean()))
    table = np.array(rows)
    return dict(zip(("sbr", "visibility", "roi", "patch_mean", "centre"), table.T, strict=True))


@pytest.fixture(scope="module")
def signal_table() -> dict[str, np.ndarray]:
    """80 subjects with SBRs spread evenly over [0.5, 6.5] (both sides decorrelated): the shape of the signal."""
    sbr_right = np.linspace(0.5, 6.5, 80)
    return _signal_rows(sbr_right, np.random.default_rng(11).permutation(sbr_right), 2024)


@pytest.fixture(scope="module")
def cohort_signal_table() -> dict[str, np.ndarray]:
    """80 subjects with SBRs from the cohort's own label model: what a shortcut would achieve on the cohort."""
    labels = sample_labels(80, np.random.default_rng(7))
    return _signal_rows(labels["sbr_right"], labels["sbr_left"], 2025)


def test_nigrosome_contrast_rises_with_ipsilateral_sbr_along_a_sigmoid(signal_table):
    sbr, roi, vis = signal_table["sbr"], signal_table["roi"], signal_table["visibility"]
    assert _spearman(sbr, roi) > 0.6
    low, mid, high = roi[sbr < 2], roi[(sbr > 3.0) & (sbr < 3.8)], roi[sbr > 5]
    spread = max(low.std(), high.std())
    assert high.mean() - low.mean() > 4 * spread  # lost vs intact nigral hyperintensity
    assert low.mean() + spread < mid.mean() < high.mean() - spread  # gradual, not a switch
    assert abs(low[: len(low) // 2].mean() - low[len(low) // 2 :].mean()) < spread  # flat floor
    assert vis[sbr < 2].max() < 0.15 and vis[sbr > 5].min() > 0.75


def test_no_trivial_leakage_from_patch_mean_or_centre_voxel(signal_table, cohort_signal_table):
    for table in (signal_table, cohort_signal_table):
        assert abs(np.corrcoef(table["sbr"], table["patch_mean"])[0, 1]) < 0.3
    # the voxel at the annotated centroid carries part of the nigrosome signal; on the cohort it must stay weak
    centre_r2 = _r2(cohort_signal_table["sbr"], cohort_signal_table["centre"])
    assert centre_r2 < 0.3
    assert centre_r2 < _r2(cohort_signal_table["sbr"], cohort_signal_table["roi"]) - 0.4
    assert _r2(signal_table["sbr"], signal_table["centre"]) < _r2(signal_table["sbr"], signal_table["roi"]) - 0.4


def test_render_subject_returns_volume_affine_and_centroids():
    volume, affine, right, left = render_subject(5.0, 1.0, np.random.default_rng(0))
    assert volume.dtype == np.int16 and volume.shape == cohort.VOLUME_SHAPE and volume.min() >= 0
    assert affine.shape == (4, 4) and affine.dtype == np.float64
    assert np.allclose(np.diag(affine)[:3], cohort.VOXEL_SIZE)
    assert right.shape == left.shape == (3,) and right[0] > left[0]  # RAS: right nigra at larger x index


# 2./3. files and determinism ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "c24"
    generate_cohort(out, n_patients=24, seed=5, num_workers=2, progress=False)
    return out


def test_files_are_ras_nifti_with_a_consistent_datalist(small_cohort):
    datalist = json.loads((small_cohort / "datalist.json").read_text())
    assert list(datalist) == ["training", "validation", "test"]
    assert [len(datalist[k]) for k in datalist] == [17, 4, 3]  # round(0.7 n), round(0.15 n), rest
    ids = [case["id"] for section in datalist.values() for case in section]
    assert len(ids) == len(set(ids)) == 24
    for case in (case for section in datalist.values() for case in section):
        img = nib.load(small_cohort / case["image"])
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert img.header.get_zooms() == (0.5, 0.5, 1.0)
        assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
        assert img.get_data_dtype() == np.int16
        assert case["centroid_space"] == "voxel" and isinstance(case["sbr_right"], float)
        shape = np.array(img.shape)
        for key in ("centroid_right", "centroid_left"):
            low = np.array(case[key]) - PATCH // 2
            assert all(isinstance(v, int) for v in case[key])
            assert np.all(low >= 0) and np.all(low + PATCH <= shape), (case["id"], key)
        world = [img.affine @ [*case[key], 1] for key in ("centroid_right", "centroid_left")]
        assert world[0][0] > world[1][0]  # the right centroid lies to the subject's right
    meta = json.loads((small_cohort / "cohort.json").read_text())
    assert meta["n_patients"] == 24 and meta["seed"] == 5 and meta["synthetic"] is True
    assert meta["split_sizes"] == {"training": 17, "validation": 4, "test": 3}
    assert {"is_pd", "visibility_right", "visibility_left"} <= set(meta["patients"][0])


def test_split_of_the_default_cohort_matches_the_paper():
    assert cohort.split_sizes(367, cohort.DEFAULT_SPLIT) == (257, 55, 55)


def test_generation_is_deterministic_by_seed_whatever_the_worker_count(tmp_path):
    kwargs = {"n_patients": 6, "progress": False}
    runs = {
        name: generate_cohort(tmp_path / name, seed=seed, num_workers=workers, **kwargs).parent
        for name, seed, workers in (("a", 3, 1), ("b", 3, 2), ("c", 4, 1))
    }
    a, b, c = (_volumes(runs[k]) for k in "abc")
    assert (runs["a"] / "datalist.json").read_bytes() == (runs["b"] / "datalist.json").read_bytes()
    for name in a:  # byte-identical files, identical voxels
        assert (runs["a"] / "smwi" / name).read_bytes() == (runs["b"] / "smwi" / name).read_bytes()
        assert np.array_equal(a[name], b[name])
    assert (runs["a"] / "datalist.json").read_text() != (runs["c"] / "datalist.json").read_text()
    assert not any(np.array_equal(a[name], c[name]) for name in a)


# 6./7. atomic writes and first-use generation -------------------------------------------------------------------------


def _failing_on_third(monkeypatch):
    calls = []
    real = cohort._render_case

    def render(task):
        calls.append(task)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(task)

    monkeypatch.setattr(cohort, "_render_case", render)


def test_crash_midway_leaves_neither_output_nor_temp_dir(tmp_path, monkeypatch):
    _failing_on_third(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_cohort(tmp_path / "out", n_patients=6, num_workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_crash_while_replacing_keeps_the_old_cohort(tmp_path, monkeypatch):
    out = generate_cohort(tmp_path / "out", n_patients=4, seed=1, num_workers=1, progress=False).parent
    before = (out / "datalist.json").read_bytes()
    _failing_on_third(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_cohort(out, n_patients=6, seed=2, num_workers=1, progress=False, force=True)
    assert (out / "datalist.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_existing_cohort_is_kept_or_replaced_only_with_force(tmp_path):
    out = generate_cohort(tmp_path / "out", n_patients=4, seed=1, num_workers=1, progress=False).parent
    mtime = (out / "datalist.json").stat().st_mtime_ns
    generate_cohort(out, n_patients=4, seed=1, num_workers=1, progress=False)  # same parameters: kept
    assert (out / "datalist.json").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="use force"):
        generate_cohort(out, n_patients=4, seed=2, num_workers=1, progress=False)
    generate_cohort(out, n_patients=5, seed=2, num_workers=1, progress=False, force=True)
    assert json.loads((out / "cohort.json").read_text())["n_patients"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_ensure_demo_cohort_generates_only_when_parameters_change(tmp_path):
    out = tmp_path / "demo"
    datalist = ensure_demo_cohort(out, n_patients=4, seed=0)
    assert datalist == out.absolute() / "datalist.json" and datalist.is_file()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert ensure_demo_cohort(out, n_patients=4, seed=0) == datalist
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    ensure_demo_cohort(out, n_patients=4, seed=1)
    assert json.loads((out / "cohort.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_ensure_demo_cohort_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a cohort")
    with pytest.raises(FileExistsError, match="not a synthetic cohort"):
        ensure_demo_cohort(tmp_path / "mine", n_patients=4)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


# 4. generator versions: the slab stays bit for bit, the wide field of view is a real localisation task ------------


def test_the_slab_generator_reproduces_version_1_1_0_bit_for_bit():
    """Digests of two subjects rendered by generator 1.1.0 before the wide field of view was added."""
    import hashlib

    for seed, digest in ((0, "a120a19f5de3f108"), (7, "e427e120819eb863")):
        s = simulate_subject(2.1, 4.5, np.random.default_rng(seed))
        data = s.volume.tobytes() + s.affine.tobytes() + s.centroid_right.tobytes() + s.centroid_left.tobytes()
        assert hashlib.sha256(data).hexdigest()[:16] == digest


@pytest.fixture(scope="module")
def wide_subjects():
    rng = np.random.default_rng(11)
    return [simulate_subject(3.0, 3.0, rng, cohort.WIDE_FIELD) for _ in range(12)]


def test_wide_field_places_the_midbrain_anywhere_in_a_head_sized_field(wide_subjects):
    extent = np.asarray(cohort.WIDE_FIELD.shape) * np.asarray(cohort.VOXEL_SIZE)
    assert extent[0] >= 100 and extent[1] >= 100
    world = np.array([(s.affine @ [*s.nigrosome_right, 1.0])[:3] for s in wide_subjects])
    voxel = np.array([s.nigrosome_right for s in wide_subjects]) * np.asarray(cohort.VOXEL_SIZE)
    assert voxel[:, :2].std(axis=0).min() > 6.0  # position SD 10 mm in x and y (12 draws)
    # predicting the mean position misses by centimetres, not the ~2 mm of the slab cohort
    assert np.median(np.linalg.norm(voxel - voxel.mean(axis=0), axis=1)) > 5.0
    assert np.isfinite(world).all()
    for s in wide_subjects:  # both annotated patches inside the volume
        for centroid in (s.centroid_right, s.centroid_left):
            low = centroid - PATCH // 2
            assert np.all(low >= 0) and np.all(low + PATCH <= np.asarray(s.volume.shape))


def test_wide_field_has_dark_look_alikes_away_from_the_nigra(wide_subjects):
    """Dentate nuclei: hypointense (like the SN) about 3 cm posterior to the nigrosome, on both sides."""
    from scipy import ndimage

    for s in wide_subjects[:4]:
        volume = ndimage.uniform_filter(s.volume.astype(np.float64), (5, 5, 3))  # 2.5 x 2.5 x 3 mm: less noise
        tissue = np.median(volume)
        mid_x = int(round((s.nigrosome_right[0] + s.nigrosome_left[0]) / 2))
        y = int(round(s.nigrosome_right[1]))
        behind = volume[max(0, mid_x - 60) : mid_x + 60, max(0, y - 90) : max(1, y - 40), :]  # 20-45 mm posterior
        front = volume[max(0, mid_x - 60) : mid_x + 60, y + 40 : y + 70, :]  # 20-35 mm anterior: no nucleus there
        dark_behind, dark_front = (behind < 0.8 * tissue).mean(), (front < 0.8 * tissue).mean()
        assert dark_behind > 0.01 and dark_behind > 5 * dark_front


def test_wide_cohort_is_its_own_generator_version(tmp_path):
    datalist = generate_cohort(tmp_path / "w", n_patients=3, seed=2, num_workers=1, progress=False, field="wide")
    meta = json.loads((datalist.parent / "cohort.json").read_text())
    assert (meta["version"], meta["field"], meta["volume_shape"]) == ("2.0.0", "wide", [208, 208, 36])
    assert "surroundings" in meta["model"]
    with pytest.raises(ValueError, match="field must be one of"):
        generate_cohort(tmp_path / "x", n_patients=3, field="huge")
