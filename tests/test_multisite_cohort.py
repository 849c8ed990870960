"""The multi-site synthetic cohort: site effects real and as documented, labels-only SPECT transform, files."""

import json
import math
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from bundle.data.pairs import NigralPatchPaird
from bundle.synthetic.multisite_cohort import generate_multisite_cohort, site_datalist
from bundle.synthetic.site_model import SITES, site_field_of_view, site_scanner, susceptibility_contrast
from bundle.synthetic.smwi_model import SBR_MAX, SBR_MIN
from bundle.synthetic.smwi_phantom import simulate_subject

SIZES = (8, 6, 5, 4)


@pytest.fixture(scope="module")
def multisite(tmp_path_factory):
    out = tmp_path_factory.mktemp("ms") / "cohort"
    generate_multisite_cohort(out, sizes=SIZES, seed=5, num_workers=1, progress=False)
    return out


def test_the_susceptibility_contrast_is_b0_times_te_times_the_mask_power():
    # site3: 1.5 T, TE 30 ms, m = 4 -> (1.5 x 30) / (3 x 20) x 4 / 4 = 0.75; site4: 1.5 x 24 / 60 x 3 / 4 = 0.45
    assert math.isclose(susceptibility_contrast(SITES[2]), 0.75)
    assert math.isclose(susceptibility_contrast(SITES[3]), 0.45)
    assert math.isclose(susceptibility_contrast(SITES[0]), 1.0)  # the demo cohort's scanner
    scanner = site_scanner(SITES[2])  # noise: sigma x (3 / 1.5) x (0.25 / 0.54)
    assert np.allclose(scanner.acquisition.rician_sigma, np.array([0.08, 0.12]) * 2.0 * 0.25 / 0.54)


def test_files_have_each_sites_voxel_grid_and_slab_angulation(multisite):
    pooled = json.loads((multisite / "datalist.json").read_text())
    for site, n in zip(SITES, SIZES, strict=True):
        sections = json.loads(site_datalist(multisite, site.name).read_text())
        cases = [c for section in sections.values() for c in section]
        assert len(cases) == n and all(c["id"].startswith(f"{site.name}-") for c in cases)
        assert [c["id"] for c in pooled["training"] if c["site"] == site.name] == [
            c["id"] for c in sections["training"]
        ]
        img = nib.load(multisite / site.name / cases[0]["image"])
        assert img.shape == site_field_of_view(site).shape
        assert np.allclose(img.header.get_zooms(), site.voxel_size_mm)
        z_axis = img.affine[:3, 2] / np.linalg.norm(img.affine[:3, 2])  # the slab normal, tilted about x
        assert math.isclose(math.degrees(math.atan2(-z_axis[1], z_axis[2])), site.slab_tilt_deg, abs_tol=1e-6)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


def test_noise_and_nigral_contrast_differ_between_sites_as_the_model_states():
    """The same subject (same seed, same SBRs) on each site's scanner: the noise SD in the corners' background and
    the darkening of the nigra follow the documented factors (SNR ~ B0 x voxel volume; contrast ~ B0 x TE x m)."""
    measured = {}
    for site in SITES:
        s = simulate_subject(2.0, 2.4, np.random.default_rng(11), site_field_of_view(site), True, site_scanner(site))
        volume = s.volume.astype(np.float64)
        nx, ny = volume.shape[0] // 6, volume.shape[1] // 6
        corners = np.concatenate([volume[sx, sy].ravel() for sx in (slice(0, nx), slice(-nx, None))
                                  for sy in (slice(0, ny), slice(-ny, None))])  # fmt: skip
        level = corners.mean()  # background, 0.95 of tissue x gain
        nigra = volume[s.masks["nigra_right"] & ~s.masks["nigrosome_right"]].mean()
        measured[site.name] = (corners.std() / level, (level - nigra) / level)
    for site in SITES[1:]:
        acq, ref = site_scanner(site).acquisition, site_scanner(SITES[0]).acquisition
        expected_noise = math.hypot(np.mean(acq.rician_sigma), acq.processing_noise_sd) / math.hypot(
            np.mean(ref.rician_sigma), ref.processing_noise_sd
        )
        noise_ratio = measured[site.name][0] / measured["site1"][0]
        assert abs(noise_ratio / expected_noise - 1) < 0.35, (site.name, noise_ratio, expected_noise)
    # a weaker susceptibility contrast, a paler nigra: k = 1.0 and 1.09 at 3 T, 0.75 and 0.45 at 1.5 T
    darkening = {name: d for name, (_, d) in measured.items()}
    assert min(darkening["site1"], darkening["site2"]) > darkening["site3"] > darkening["site4"], measured


def test_the_spect_transform_touches_the_labels_only(tmp_path):
    """Another camera gives byte-identical images and labels that follow eq. clip(a x SBR x (1-r)^(gap/12) + b)."""
    base = replace(SITES[1], name="siteX")
    recalibrated = replace(base, camera_scale=1.3, camera_offset=-0.2)
    runs = {}
    for name, site in (("a", base), ("b", recalibrated)):
        runs[name] = generate_multisite_cohort(tmp_path / name, sizes=[6], seed=2, sites=[site], num_workers=1,
                                               progress=False).parent  # fmt: skip
    a, b = (json.loads((runs[k] / "siteX" / "datalist.json").read_text()) for k in "ab")
    truth = {p["id"]: p for p in json.loads((runs["b"] / "cohort.json").read_text())["patients"]}
    for case_a, case_b in zip(*(sum(d.values(), []) for d in (a, b)), strict=True):
        assert (runs["a"] / "siteX" / case_a["image"]).read_bytes() == (
            runs["b"] / "siteX" / case_b["image"]
        ).read_bytes()
        assert case_a["centroid_right"] == case_b["centroid_right"]
        t = truth[case_b["id"]]
        for side in ("right", "left"):
            progressed = t[f"sbr_at_mri_{side}"] * (1 - t["decline_per_year"]) ** (t["gap_months"] / 12)
            expected = min(max(1.3 * progressed - 0.2, SBR_MIN), SBR_MAX)
            assert abs(case_b[f"sbr_{side}"] - expected) < 2e-3  # gap and decline are stored rounded
        assert case_a["sbr_right"] != case_b["sbr_right"]


def test_generation_is_deterministic_and_idempotent(multisite, tmp_path):
    again = generate_multisite_cohort(tmp_path / "again", sizes=SIZES, seed=5, num_workers=2, progress=False).parent
    for name in ("datalist.json", "cohort.json", "site3/smwi/site3-P0002.nii.gz"):
        assert (again / name).read_bytes() == (multisite / name).read_bytes()
    stamp = (multisite / "cohort.json").stat().st_mtime_ns
    generate_multisite_cohort(multisite, sizes=SIZES, seed=5, num_workers=1, progress=False)  # same: untouched
    assert (multisite / "cohort.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="use force"):
        generate_multisite_cohort(multisite, sizes=SIZES, seed=6, num_workers=1, progress=False)
    with pytest.raises(ValueError, match="at least 3 patients"):
        generate_multisite_cohort(tmp_path / "tiny", sizes=[2, 5], progress=False)


def test_every_site_loads_through_the_bundles_patch_chain(multisite):
    """Off-grid sites are resampled to 0.5 x 0.5 x 1 mm around the centroids: the network gets 50 x 50 x 20."""
    chain = NigralPatchPaird()
    for site in SITES:
        case = json.loads(site_datalist(multisite, site.name).read_text())["training"][0]
        out = chain({**case, "image": str(multisite / site.name / case["image"])})
        assert tuple(out["image"].shape) == (2, 50, 50, 20) and bool(np.isfinite(out["image"].numpy()).all())
