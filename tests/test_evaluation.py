"""configs/evaluate.json and bundle.evaluation: metrics.json against an independent recomputation, statistics by
hand and against the 2023 paper's reported numbers, readable figures."""

import csv
import json
import math
import os
import time

import numpy as np
import pytest
import torch
from conftest import REPO, workflow_configs
from monai.bundle import run
from PIL import Image
from scipy import stats

from bundle.evaluation.statistics import fisher_z_interval, lins_ccc, mcnemar_exact, mean_interval, paired_ttest
from bundle.evaluation.tables import sharpness_cp_points
from bundle.evaluation.workflow import FIGURES, needs_inference
from bundle.method.networks import VGGRegressor3D

SIDES = ("right", "left")
THRESHOLDS = {"right": 3.401, "left": 3.345}
Z95 = 1.959963984540054


# --- statistics by hand -----------------------------------------------------------------------------------------


def test_lins_ccc_by_hand():
    # means 2 and 3, variances 2/3 (1/n), covariance 2/3: rho_c = (4/3) / (2/3 + 2/3 + 1) = 4/7
    assert lins_ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert lins_ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert lins_ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # a scale change lowers the CCC but not Pearson's r: 2 * (4/3) / (2/3 + 8/3 + 0) = 4/5
    assert lins_ccc([1, 2, 3], [0, 2, 4]) == pytest.approx(4 / 5)


def test_confidence_intervals_reproduce_bae2023():
    """Bae et al. 2023 (n = 74): rho_c 0.7443, CI 0.6216-0.8314; |residual| 0.6837 ± 0.5972, CI 0.5467-0.8207."""
    low, high = fisher_z_interval(0.7443, 74)
    assert low == pytest.approx(0.6216, abs=3e-4) and high == pytest.approx(0.8314, abs=1e-4)
    # a sample with that mean and (population) SD: the paper's CI is mean ± 1.96 SEM with the sample SD
    z = np.random.default_rng(0).standard_normal(74)
    values = 0.6837 + 0.5972 * (z - z.mean()) / z.std()
    summary = mean_interval(values)
    assert summary["ci"] == pytest.approx([0.5467, 0.8207], abs=1e-4)
    assert summary["sd"] == pytest.approx(0.5972 * math.sqrt(74 / 73))
    assert fisher_z_interval(0.5, 3) == pytest.approx((math.nan, math.nan), nan_ok=True)


def test_mcnemar_exact_on_a_known_table():
    # 10 pairs only A right, 2 only B right: two-sided exact p = 2 * P(X <= 2 | 12, 1/2) = 2 * 79 / 4096
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 5, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 5, dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (10, 2)
    assert result["p"] == pytest.approx(158 / 4096)
    assert mcnemar_exact(a, a)["p"] == 1.0


def test_paired_ttest_is_scipys():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.1, 3.9, 4.2])
    result = paired_ttest(a, b)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / 2)
    assert result["t"] == pytest.approx(t)
    assert result["p"] == pytest.approx(2 * stats.t.sf(abs(t), 3))


def test_sharpness_cp_points_by_hand():
    # scores 0.1 .. 0.4: k = 0, .1, .2, .3, .4 -> CP 0, .25, .5, .75, 1; sharpness = 1 - 2k (range 1)
    curve = sharpness_cp_points(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), np.ones(4), 1.0)
    assert curve.cp == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert curve.sharpness == pytest.approx([1, 0.8, 0.6, 0.4, 0.2])
    assert curve.optimal == 2  # (0.6, 0.5): squared distance 0.41 to (1, 1), the smallest
    assert curve.at_target == 4 and curve.point(4)["normalised_width"] == pytest.approx(0.8)
    assert curve.auc == pytest.approx(np.trapezoid([1, 0.8, 0.6, 0.4, 0.2], [0, 0.25, 0.5, 0.75, 1]))


def test_needs_inference(tmp_path):
    predictions, ckpt = tmp_path / "predictions.csv", tmp_path / "model.pt"
    assert needs_inference(predictions, ckpt)
    ckpt.write_bytes(b"x")
    predictions.write_text("id\n")
    assert not needs_inference(predictions, ckpt)
    later = time.time() + 10
    os.utime(ckpt, (later, later))  # a checkpoint newer than the predictions: they are stale
    assert needs_inference(predictions, ckpt)


# --- the workflow against an independent recomputation ------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_cohort):
    """evaluate.json on the tiny cohort's 11 training cases with an untrained [2,2,2,2] network (no predictions
    yet, so it runs inference first)."""
    out = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    torch.save(VGGRegressor3D(channels=(2, 2, 2, 2)).state_dict(), out / "model.pt")
    overrides = {"network_def#channels": [2, 2, 2, 2], "mc_samples": 20, "section": "training", "gamma_r": 0.3,
                 "gamma_l": 0.8, "ckpt_path": str(out / "model.pt"), "output_dir": str(out / "eval")}  # fmt: skip
    evaluate(tiny_cohort, overrides)
    return out, overrides


def evaluate(tiny_cohort, overrides):
    run("evaluating", config_file=workflow_configs("evaluating"),
        meta_file=str(REPO / "configs" / "metadata.json"), logging_file=str(REPO / "configs" / "logging.conf"),
        bundle_root=str(REPO), dataset_dir=str(tiny_cohort), **overrides)  # fmt: skip


def expected_metrics(predictions_csv, datalist, section, gamma_r, gamma_l, sbr_max=6.84):
    """metrics.json recomputed with numpy / scipy only, straight from the CSV and the datalist JSON."""
    with open(predictions_csv) as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    cases = [c for c in json.loads(datalist.read_text())[section] if c["id"] in rows]
    col = {k: np.array([float(rows[c["id"]][k]) for c in cases]) for k in next(iter(rows.values())) if k != "id"}
    truth = {s: np.array([c[f"sbr_{s}"] for c in cases], dtype=float) for s in SIDES}
    gamma = {"right": gamma_r, "left": gamma_l}
    out = {"n": len(cases), "table3": {}, "table4": {}, "table5": {"mc": {}, "symmetric": {}}, "agreement": {},
           "intervals": {}}  # fmt: skip

    def summary(v):
        sem = v.std(ddof=1) / np.sqrt(len(v))
        return {"mean": v.mean(), "sd": v.std(ddof=1), "median": np.median(v),
                "ci": [v.mean() - Z95 * sem, v.mean() + Z95 * sem]}  # fmt: skip

    for s in SIDES:
        y, p = truth[s], col[f"sbr_{s}"]
        err = p - y
        out["table3"][s] = {"rmse": np.sqrt(np.mean(err**2)), "mae": np.mean(np.abs(err)),
                            "r": np.corrcoef(p, y)[0, 1], "p": stats.pearsonr(p, y).pvalue}  # fmt: skip
        ty, tp = y < THRESHOLDS[s], p < THRESHOLDS[s]
        tpos, fneg, fpos, tneg = (int(np.sum(ty & tp)), int(np.sum(ty & ~tp)), int(np.sum(~ty & tp)),
                                  int(np.sum(~ty & ~tp)))  # fmt: skip
        out["table4"][s] = {"accuracy": (tpos + tneg) / len(y),
                            "sensitivity": tpos / (tpos + fneg) if tpos + fneg else None,
                            "specificity": tneg / (tneg + fpos) if tneg + fpos else None,
                            "tp": tpos, "fn": fneg, "fp": fpos, "tn": tneg}  # fmt: skip
        for mode, unit in (("mc", col[f"sigma_{s}"]), ("symmetric", col[f"sigma_{s}"] + gamma[s] * col["sigma_sym"])):
            ks = np.concatenate([[0.0], np.sort(np.abs(err) / unit)])
            # covered at scale k iff |error| / unit <= k (compared with a relative tolerance of a few ulps)
            cp = np.array([np.mean(np.abs(err) <= k * unit * (1 + 1e-12)) for k in ks])
            width = np.array([np.mean(2 * k * unit) / sbr_max for k in ks])
            sharp = np.clip(1 - width, 0, 1)
            best, reach = np.argmin((1 - sharp) ** 2 + (1 - cp) ** 2), np.flatnonzero(cp >= 0.95)[0]

            def point(i, ks=ks, cp=cp, sharp=sharp, width=width):
                return {"sharpness": sharp[i], "cp": cp[i], "k": ks[i], "normalised_width": width[i]}

            out["table5"][mode][s] = {"auc": np.sum((cp[1:] - cp[:-1]) * (sharp[1:] + sharp[:-1]) / 2),
                                      "optimal": point(best), "at_95": point(reach)}  # fmt: skip
        ccc = 2 * np.mean((p - p.mean()) * (y - y.mean())) / (p.var() + y.var() + (p.mean() - y.mean()) ** 2)
        half = Z95 / np.sqrt(len(y) - 3)
        value_range = y.max() - y.min()
        out["agreement"][s] = {
            "ccc": ccc, "ccc_ci": [np.tanh(np.arctanh(ccc) - half), np.tanh(np.arctanh(ccc) + half)],
            "abs_residual": summary(np.abs(err)),
            "normalised_residual": {**summary(np.abs(err) / value_range), "range": value_range},
        }  # fmt: skip
        inside = (col[f"low_{s}"] <= y) & (y <= col[f"high_{s}"])
        mean_width = np.mean(col[f"high_{s}"] - col[f"low_{s}"])
        out["intervals"][s] = {"cp": inside.mean(), "mean_width": mean_width, "sharpness": 1 - mean_width / sbr_max}

    def avg(table, keys):
        return {k: None if any(table[s][k] is None for s in SIDES) else np.mean([table[s][k] for s in SIDES])
                for k in keys}  # fmt: skip

    out["table3"]["avg"] = {**avg(out["table3"], ("rmse", "mae", "r")), "p": max(out["table3"][s]["p"] for s in SIDES)}
    out["table4"]["avg"] = avg(out["table4"], ("accuracy", "sensitivity", "specificity"))
    for mode in ("mc", "symmetric"):
        t5 = out["table5"][mode]
        t5["avg"] = {"auc": np.mean([t5[s]["auc"] for s in SIDES]),
                     **{name: avg({s: t5[s][name] for s in SIDES}, ("sharpness", "cp", "normalised_width"))
                        for name in ("optimal", "at_95")}}  # fmt: skip
    out["agreement"]["avg"] = {"ccc": np.mean([out["agreement"][s]["ccc"] for s in SIDES])}
    out["agreement"]["confidence_level"] = 0.95
    out["intervals"]["avg"] = avg(out["intervals"], ("cp", "mean_width", "sharpness"))
    return out


def assert_same(actual, expected, path="metrics"):
    """Same keys everywhere and every number equal to the recomputation (None stands for NaN / undefined)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{path}: keys {actual} vs {expected}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    elif expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert actual is None, f"{path}: {actual} should be undefined"
    else:
        assert actual == pytest.approx(float(expected), rel=1e-9, abs=1e-12), f"{path}: {actual} != {expected}"


def test_metrics_json_equals_independent_recomputation(evaluated, tiny_cohort):
    out, overrides = evaluated
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    expected = expected_metrics(out / "eval" / "predictions.csv", tiny_cohort / "datalist.json", "training", 0.3, 0.8)
    assert metrics["n"] == 11
    assert_same({k: v for k, v in metrics.items() if k not in ("settings", "table5")},
                {k: v for k, v in expected.items() if k != "table5"})  # fmt: skip
    settings = metrics["settings"]
    assert (settings["gamma_r"], settings["gamma_l"], settings["section"]) == (0.3, 0.8, "training")
    assert settings["missing_predictions"] == [] and "uncalibrated" in settings["gamma_source"]
    assert_same(metrics["table5"], expected["table5"])


def test_existing_predictions_are_evaluated_without_a_model(evaluated, tiny_cohort):
    out, overrides = evaluated
    before = (out / "eval" / "metrics.json").read_text()
    predictions = (out / "eval" / "predictions.csv").read_text()
    overrides = {**overrides, "ckpt_path": str(out / "absent" / "model.pt"), "figures": False}
    evaluate(tiny_cohort, overrides)  # no checkpoint needed: no inference is run
    assert (out / "eval" / "predictions.csv").read_text() == predictions
    assert json.loads((out / "eval" / "metrics.json").read_text()) == json.loads(before)


def test_figures_are_readable_pngs_and_in_tensorboard(evaluated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = evaluated
    for name in FIGURES:
        with Image.open(out / "eval" / f"{name}.png") as image:
            assert image.format == "PNG"
            width, height = image.size
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert width >= 700 and height >= 550, (name, image.size)
        assert pixels.std() > 10 and (pixels < 128).mean() > 0.005, f"{name} looks empty"
    events = EventAccumulator(str(out / "eval"), size_guidance={"images": 0}).Reload()
    assert {f"evaluation/{name}" for name in FIGURES} <= set(events.Tags()["images"])
    assert "evaluation/mae_avg" in events.Tags()["scalars"]
