"""The evaluating workflow and bundle.evaluation: metrics and statistics on hand-computed cases and against the
2023 paper's reported numbers, metrics.json of a real run, readable figures."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import REPO, workflow_configs
from monai.bundle import run
from PIL import Image
from scipy import stats

from bundle.constants import SIDES
from bundle.evaluation.evaluate import FIGURES
from bundle.evaluation.predictions import EvaluationData
from bundle.evaluation.statistics import fisher_z_interval, lins_ccc, mcnemar_exact, mean_interval, paired_ttest
from bundle.evaluation.tables import compute_metrics, sharpness_cp_points
from bundle.method.networks import VGGRegressor3D

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


# --- the workflow ------------------------------------------------------------------------------------------------


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


def test_compute_metrics_on_a_hand_made_cohort():
    """Four patients, every figure computed by hand (SBR units, thresholds 3.401 right / 3.345 left)."""
    truth = np.array([[4.0, 4.0], [3.0, 3.2], [2.0, 2.0], [5.0, 5.0]])
    pred = np.array([[4.5, 3.5], [3.0, 3.6], [2.5, 2.0], [5.0, 4.6]])
    nan = np.full((4, 2), np.nan)
    data = EvaluationData(ids=["P1", "P2", "P3", "P4"], truth=truth, pred=pred, sigma=nan, sigma_sym=nan[:, 0],
                          low=pred - 0.6, high=pred + 0.6)  # fmt: skip
    metrics = compute_metrics(data, gamma_r=0.5, gamma_l=0.5, sbr_max=6.84)
    t3 = metrics["table3"]
    # right errors +.5, 0, +.5, 0; left -.5, +.4, 0, -.4
    assert (t3["right"]["mae"], t3["left"]["mae"]) == (pytest.approx(0.25), pytest.approx(0.325))
    assert t3["right"]["rmse"] == pytest.approx(math.sqrt(0.125)) and t3["left"]["rmse"] == pytest.approx(
        math.sqrt(0.1425)
    )
    # right: deviations (.75, -.75, -1.25, 1.25) and (.5, -.5, -1.5, 1.5): r = 4.5 / sqrt(4.25 * 5)
    assert t3["right"]["r"] == pytest.approx(4.5 / math.sqrt(21.25))
    assert t3["avg"]["mae"] == pytest.approx((0.25 + 0.325) / 2)
    # Table 4: right abnormal truth (P2, P3) = predicted (P2, P3); left truth (P2, P3), predicted P3 only
    assert metrics["table4"]["right"] == {"accuracy": 1.0, "sensitivity": 1.0, "specificity": 1.0, "tp": 2, "fn": 0,
                                          "fp": 0, "tn": 2}  # fmt: skip
    assert metrics["table4"]["left"] == {"accuracy": 0.75, "sensitivity": 0.5, "specificity": 1.0, "tp": 1, "fn": 1,
                                         "fp": 0, "tn": 2}  # fmt: skip
    # Lin's CCC right: s_xy 1.125, variances 1.0625 and 1.25, mean difference .25 -> 2.25 / 2.375
    assert metrics["agreement"]["right"]["ccc"] == pytest.approx(18 / 19)
    # the written intervals (pred +- 0.6) hold every right truth; left misses none either (|errors| <= .5)
    assert metrics["intervals"]["right"] == {"cp": 1.0, "mean_width": pytest.approx(1.2),
                                             "sharpness": pytest.approx(1 - 1.2 / 6.84)}  # fmt: skip
    assert metrics["table5"] is None  # no sigma in these predictions: no sharpness-CP curves
    assert metrics["n"] == 4


def test_metrics_json_of_the_workflow(evaluated, tiny_cohort):
    """The workflow pairs predictions.csv with the section's truths and writes the tables the README lists."""
    out, overrides = evaluated
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    with open(out / "eval" / "predictions.csv") as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    cases = json.loads((tiny_cohort / "datalist.json").read_text())["training"]
    assert metrics["n"] == len(cases) == len(rows) == 11
    for side in SIDES:
        errors = [abs(float(rows[c["id"]][f"sbr_{side}"]) - c[f"sbr_{side}"]) for c in cases]
        assert metrics["table3"][side]["mae"] == pytest.approx(np.mean(errors), rel=1e-9)
    assert set(metrics["table5"]) == {"mc", "symmetric"}
    for mode in ("mc", "symmetric"):
        assert 0 < metrics["table5"][mode]["right"]["auc"] <= 1
        assert metrics["table5"][mode]["right"]["at_95"]["cp"] >= 0.95
    settings = metrics["settings"]
    assert (settings["gamma_r"], settings["gamma_l"], settings["section"]) == (0.3, 0.8, "training")
    assert settings["missing_predictions"] == [] and "uncalibrated" in settings["gamma_source"]


def test_existing_predictions_are_evaluated_without_a_model(evaluated, tiny_cohort):
    out, overrides = evaluated
    before = (out / "eval" / "metrics.json").read_text()
    predictions = (out / "eval" / "predictions.csv").read_text()
    overrides = {**overrides, "ckpt_path": str(out / "absent" / "model.pt"), "figures": False, "run_inference": False}
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
