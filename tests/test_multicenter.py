"""The multi-center study's pieces that need no training: leave-one-site-out datalists, per-site metrics and the
held-out site's local recalibration (split-conformal) on hand-made predictions."""

import csv
import importlib.util
import json
import sys

import numpy as np
import pytest
from conftest import REPO

from bundle.evaluation.predictions import PREDICTION_COLUMNS
from bundle.synthetic.multisite_cohort import generate_multisite_cohort


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


multicenter = _load("multicenter")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("mc") / "cohort"
    generate_multisite_cohort(out, sizes=(10, 8, 6), seed=3, num_workers=1, progress=False)
    return out


def _write_predictions(path, cases, pred, half):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, PREDICTION_COLUMNS)
        writer.writeheader()
        for case, (pr, pl), (hr, hl) in zip(cases, pred, half, strict=True):
            row = {"id": case["id"], "sbr_right": pr, "sbr_left": pl, "sigma_right": hr, "sigma_left": hl,
                   "sigma_sym": 0.1, "low_right": pr - hr, "high_right": pr + hr, "low_left": pl - hl,
                   "high_left": pl + hl, "abnormal_right": int(pr < 3.401),
                   "abnormal_left": int(pl < 3.345)}  # fmt: skip
            writer.writerow({**row, "interval_kind": "calibrated", "nominal_coverage": 0.95,
                             "centroid_source": "annotated"})  # fmt: skip


def test_leave_one_site_out_keeps_the_held_out_site_apart(cohort, tmp_path):
    train, external = multicenter.loso_datalist(cohort, "site2", tmp_path)
    train, external = json.loads(train.read_text()), json.loads(external.read_text())
    assert all(c["site"] != "site2" for cases in train.values() for c in cases) and train["test"] == []
    assert {c["site"] for c in external["test"]} == {"site2"} and len(external["test"]) == 8  # every case of it
    pooled = json.loads((cohort / "datalist.json").read_text())
    for section in ("training", "validation"):  # the other sites' training and validation cases, unchanged
        assert train[section] == [c for c in pooled[section] if c["site"] != "site2"]


def test_per_site_metrics_split_the_predictions_by_site(cohort, tmp_path):
    cases = json.loads((cohort / "datalist.json").read_text())["test"]
    truth = np.array([[c["sbr_right"], c["sbr_left"]] for c in cases])
    pred = truth + 0.25  # MAE 0.25 everywhere; half-width 0.3 covers every case, 0.2 none
    _write_predictions(tmp_path / "p.csv", cases, pred, np.full_like(truth, 0.3))
    metrics = multicenter.per_site_metrics(tmp_path / "p.csv", cohort / "datalist.json", cohort, tmp_path / "none")
    sites = {c["site"] for c in cases}
    for site in sites:
        n = sum(c["site"] == site for c in cases)
        if n < 3:
            assert site not in metrics  # too few for R and CCC: reported as missing, not as a number
            continue
        m = metrics[site]
        assert m["n"] == n and m["mae"] == pytest.approx(0.25) and m["coverage"] == 1.0
        assert m["r"] == pytest.approx(1.0) and m["calibrated"] is False


def test_local_recalibration_reaches_nominal_coverage_when_the_shipped_intervals_are_too_narrow(tmp_path):
    """Exchangeable errors twice as wide as the shipped intervals: coverage far below 95 % before; after a local
    split-conformal scale on n >= 10 patients (20 scores) the mean coverage on the others is >= 95 % - 2 %."""
    rng = np.random.default_rng(0)
    n = 120
    cases = [{"id": f"siteZ-P{i:04d}", "image": "x.nii.gz", "sbr_right": 0.0, "sbr_left": 0.0} for i in range(n)]
    truth = rng.uniform(1, 5, (n, 2))
    for case, t in zip(cases, truth, strict=True):
        case["sbr_right"], case["sbr_left"] = float(t[0]), float(t[1])
    (tmp_path / "d.json").write_text(json.dumps({"test": cases}))
    half = np.full((n, 2), 0.2)
    _write_predictions(tmp_path / "p.csv", cases, truth + rng.normal(0, 0.2, (n, 2)), half)  # errors sd = half
    curve = multicenter.recalibration_curve(tmp_path / "p.csv", tmp_path / "d.json", tmp_path, 0.95, 100, 1)
    assert curve["before"] < 0.75  # +-1 SD covers about 68 %
    assert curve["n"]["5"]["coverage_mean"] is None and curve["n"]["5"]["draws_without_finite_scale"] == 100
    for size in ("10", "20", "30"):
        assert curve["n"][size]["coverage_mean"] >= 0.93, curve["n"][size]
