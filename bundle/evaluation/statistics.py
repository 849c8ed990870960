"""Statistics of the evaluation: Lin's concordance with its CI and the CI of a mean (Bae et al. 2023), and the paired
tests used to compare models (ablation). Library statistics come from scipy; Lin's CCC has no scipy function."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["lins_ccc", "fisher_z_interval", "mean_interval", "paired_ttest", "mcnemar_exact"]


def lins_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin 1989, Biometrics 45:255; used by Bae et al. 2023).

    rho_c = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2), with the 1/n moments of Lin's definition. scipy has
    no function for it. NaN when both variables are constant and equal.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("lins_ccc needs two equally long samples of at least 2 values")
    sxy = np.mean((x - x.mean()) * (y - y.mean()))
    denominator = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2.0 * sxy / denominator) if denominator > 0 else math.nan


def fisher_z_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a correlation by Fisher's z transform: tanh(atanh(rho) -+ z_q / sqrt(n - 3)).

    The 2023 paper's rule for Lin's CCC (rho_c = 0.7443, n = 74 gives 0.6216-0.8314 there). NaN if n <= 3.
    """
    if n <= 3 or not math.isfinite(rho):
        return math.nan, math.nan
    if abs(rho) >= 1:
        return rho, rho
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    z = math.atanh(rho)
    return math.tanh(z - half), math.tanh(z + half)


def mean_interval(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean, sample SD, median and the normal-approximation CI of the mean (mean -+ z_q * SEM).

    This is the CI of Bae et al. 2023 (their 0.6837 SBR, n = 74, CI 0.5467-0.8207 is reproduced with the sample SD).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "sd": math.nan, "median": float(np.median(values)), "ci": [math.nan, math.nan]}
    sem = float(stats.sem(values))
    low, high = stats.norm.interval(level, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    return {"mean": mean, "sd": float(values.std(ddof=1)), "median": float(np.median(values)),
            "ci": [float(low), float(high)]}  # fmt: skip


def paired_ttest(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Student's paired t-test (scipy ``ttest_rel``, two-sided) of a - b, e.g. per-patient absolute errors."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    result = stats.ttest_rel(a, b)
    return {"mean_difference": float(np.mean(a - b)), "t": float(result.statistic), "p": float(result.pvalue),
            "n": len(a)}  # fmt: skip


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """McNemar's test, exact form: the discordant pairs b (a right, b wrong) and c (a wrong, b right) against
    Binomial(b + c, 1/2), two-sided (scipy ``binomtest``). p = 1 when there is no discordant pair."""
    a, b = np.asarray(correct_a, dtype=bool).ravel(), np.asarray(correct_b, dtype=bool).ravel()
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": p, "n": len(a)}
