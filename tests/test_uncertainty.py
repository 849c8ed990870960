"""Symmetric MC dropout (eq. 8-10, Algorithm 1), interval quality (§4.4) and conformal calibration, by hand."""

import numpy as np
import pytest

from bundle.method.uncertainty import (
    conformal_scale,
    coverage_probability,
    interval_scores,
    mc_standard_deviations,
    select_gamma,
    sharpness,
    sharpness_cp_auc,
    sharpness_cp_curve,
    summarise_mc,
    symmetric_hint,
    symmetric_intervals,
)

# 4 MC samples of 1 patient (right, left):
SAMPLES = np.array([[[0.40, 0.30]], [[0.50, 0.30]], [[0.40, 0.50]], [[0.30, 0.50]]])
# by hand: right mean 0.4, deviations 0, .1, 0, -.1 -> population SD sqrt(0.02 / 4) = 0.0707107
#          left  mean 0.4, deviations -.1, -.1, .1, .1 -> SD 0.1
#          |r - l| = 0.1, 0.2, 0.1, 0.2 -> sigma_sym = 0.15


def test_eq8_population_standard_deviations():
    sigma_r, sigma_l = mc_standard_deviations(SAMPLES)
    assert sigma_r[0] == pytest.approx(np.sqrt(0.005))
    assert sigma_l[0] == pytest.approx(0.1)


def test_eq9_mean_absolute_right_left_difference():
    assert symmetric_hint(SAMPLES)[0] == pytest.approx(0.15)


def test_eq10_follows_algorithm1_pairing():
    sym_r, sym_l = symmetric_intervals(np.array([0.1]), np.array([0.2]), np.array([0.15]), gamma_r=1.0, gamma_l=0.0)
    assert sym_r[0] == pytest.approx(0.25)  # gamma_r goes with the right side (Algorithm 1)
    assert sym_l[0] == pytest.approx(0.2)


def test_summary_of_algorithm1():
    s = summarise_mc(SAMPLES, gamma_r=0.5, gamma_l=0.2)
    assert (s.mean_r[0], s.mean_l[0]) == pytest.approx((0.4, 0.4))
    assert s.sigma_sym_r[0] == pytest.approx(np.sqrt(0.005) + 0.075)
    assert s.sigma_sym_l[0] == pytest.approx(0.1 + 0.03)
    assert s.scaled(6.84).sigma_sym[0] == pytest.approx(0.15 * 6.84)


def test_gamma_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="gamma_l"):
        symmetric_intervals(np.ones(1), np.ones(1), np.ones(1), 0.5, 1.5)


def test_bad_sample_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\[n_samples, n_patients, 2\]"):
        summarise_mc(np.zeros((4, 3)))


def test_coverage_and_sharpness_by_hand():
    truth, centre, half = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.1, 2.5, 3.0, 3.0]), np.array([0.2, 0.2, 0.2, 2.0])
    assert coverage_probability(truth, centre, half) == pytest.approx(0.75)
    # mean full width = 2 * (0.2 + 0.2 + 0.2 + 2.0) / 4 = 1.3 ; range 6.84
    assert sharpness(half, 6.84) == pytest.approx(1 - 1.3 / 6.84)
    assert sharpness(np.array([10.0]), 1.0) == 0.0  # clipped


def test_sharpness_cp_curve_and_auc_by_hand():
    truth, centre, sigma = np.array([0.0, 0.0]), np.array([0.1, 0.2]), np.array([0.1, 0.1])
    ks, cps, sharp = sharpness_cp_curve(truth, centre, sigma, value_range=1.0)
    # scores 1 and 2: k = 0, 1, 2 ; CP 0, .5, 1 ; sharpness 1 - 2 k 0.1 = 1, .8, .6
    assert ks == pytest.approx([0, 1, 2]) and cps == pytest.approx([0, 0.5, 1])
    assert sharp == pytest.approx([1, 0.8, 0.6])
    assert sharpness_cp_auc(truth, centre, sigma, 1.0) == pytest.approx(0.5 * (1 + 0.8) / 2 + 0.5 * (0.8 + 0.6) / 2)


def test_sharpness_cp_curve_counts_a_case_at_its_own_score_despite_rounding():
    """0.46 / 0.4 = 1.15 but 1.15 * 0.4 < 0.46 in floating point: the last point must still reach CP = 1."""
    ks, cps, _ = sharpness_cp_curve(np.array([0.46]), np.array([0.0]), np.array([0.4]))
    assert ks[-1] * 0.4 < 0.46  # the rounding this guards against
    assert cps.tolist() == [0.0, 1.0]


def test_conformal_scale_uses_the_n_plus_1_quantile():
    truth = np.zeros(19)
    centre = np.arange(1, 20) * 0.1  # scores 1..19 with sigma 0.1
    sigma = np.full(19, 0.1)
    # ceil((19 + 1) * 0.9) = 18 -> 18th smallest score = 18
    assert conformal_scale(truth, centre, sigma, 0.9) == pytest.approx(18.0)
    assert conformal_scale(truth, centre, sigma, 0.99) == float("inf")  # too few cases for 99 %


def test_conformal_intervals_cover_new_cases():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 2.0, 4000)
    error = rng.standard_t(3, 4000) * sigma  # heavy tails: 1.96 sigma would under-cover
    k = conformal_scale(error[:2000], np.zeros(2000), sigma[:2000], 0.95)
    covered = coverage_probability(error[2000:], np.zeros(2000), k * sigma[2000:])
    assert 0.935 <= covered <= 0.965
    assert coverage_probability(error[2000:], np.zeros(2000), 1.96 * sigma[2000:]) < 0.93


def test_interval_scores_by_hand():
    assert interval_scores([1.0, 2.0, 3.0], [0.5, 2.0, 4.0], [0.25, 1.0, 2.0]).tolist() == [2.0, 0.0, 0.5]


def test_algorithm1_gamma_choice_by_hand():
    """Two cases, errors 1 and 0.1, sigma 0.1, sigma_sym (1, 0); widths / 10. gamma = 0: scores (10, 1), curve
    (CP, sharpness) = (0, 1), (.5, .98), (1, .8), AUC .94; gamma = 1: scores (1/1.1, 1), AUC ~ .9155. So 0 wins."""
    truth, centre = np.array([1.0, 0.1]), np.zeros(2)
    sigma, sigma_sym = np.array([0.1, 0.1]), np.array([1.0, 0.0])
    assert sharpness_cp_auc(truth, centre, sigma, 10.0) == pytest.approx(0.94)
    assert sharpness_cp_auc(truth, centre, sigma + sigma_sym, 10.0) == pytest.approx(0.915455, abs=1e-6)
    for grid in ([0.0, 1.0], [1.0, 0.0]):
        gamma, auc = select_gamma(truth, centre, sigma, sigma_sym, grid, value_range=10.0)
        assert (gamma, auc) == (0.0, pytest.approx(0.94))
