"""Symmetric Monte-Carlo-dropout uncertainty (eq. 8-10, Algorithm 1) and interval quality (§4.4).

All functions are written by hand because they are the paper's own equations; each cites its equation.
MC samples are arrays shaped [n_samples, n_patients, 2] with the last axis (right, left).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "GAUSSIAN_95",
    "IntervalSettings",
    "MCSummary",
    "mc_standard_deviations",
    "symmetric_hint",
    "symmetric_intervals",
    "summarise_mc",
    "coverage_probability",
    "sharpness",
    "interval_scores",
    "conformal_scale",
    "sharpness_cp_curve",
    "sharpness_cp_auc",
    "select_gamma",
]

GAUSSIAN_95 = 1.959963984540054
"""Interval half-width in SDs when no calibration exists (a Gaussian 95 % interval, not a calibrated one)."""


def _check_samples(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[-1] != 2 or samples.shape[0] < 1:
        raise ValueError(f"MC samples must have shape [n_samples, n_patients, 2], got {samples.shape}")
    return samples


def mc_standard_deviations(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 8: sigma_r, sigma_l = population SD (1/n) of the right and left MC samples, per patient."""
    samples = _check_samples(samples)
    sd = samples.std(axis=0, ddof=0)
    return sd[:, 0], sd[:, 1]


def symmetric_hint(samples: np.ndarray) -> np.ndarray:
    """Eq. 9: sigma_sym = (1/n) sum_t |y_r^t - y_l^t|, the mean right-left disagreement of the MC samples."""
    samples = _check_samples(samples)
    return np.abs(samples[..., 0] - samples[..., 1]).mean(axis=0)


def symmetric_intervals(
    sigma_r: np.ndarray, sigma_l: np.ndarray, sigma_sym: np.ndarray, gamma_r: float, gamma_l: float
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 10 as in Algorithm 1: sigma_r^sym = sigma_r + gamma_r sigma_sym, sigma_l^sym = sigma_l + gamma_l sigma_sym.

    Eq. 10 in the text pairs gamma_l with the right side; Algorithm 1 pairs gamma_r with it. We follow
    Algorithm 1 (each side's weight belongs to that side), which is what calibration tunes per side.
    """
    for name, gamma in (("gamma_r", gamma_r), ("gamma_l", gamma_l)):
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {gamma}")
    return np.asarray(sigma_r) + gamma_r * np.asarray(sigma_sym), np.asarray(sigma_l) + gamma_l * np.asarray(sigma_sym)


@dataclass(frozen=True)
class MCSummary:
    """Per-patient summary of symmetric MC dropout (arrays of length n_patients, normalised or SBR units)."""

    mean_r: np.ndarray
    mean_l: np.ndarray
    sigma_r: np.ndarray
    sigma_l: np.ndarray
    sigma_sym: np.ndarray
    sigma_sym_r: np.ndarray
    sigma_sym_l: np.ndarray

    def scaled(self, factor: float) -> MCSummary:
        """Every field multiplied by ``factor`` (e.g. sbr_max to go from normalised to SBR units)."""
        return MCSummary(*(getattr(self, f) * factor for f in self.__dataclass_fields__))


def summarise_mc(samples: np.ndarray, gamma_r: float = 0.0, gamma_l: float = 0.0) -> MCSummary:
    """Algorithm 1 on MC samples [n, patients, 2]: MC means, eq. 8 SDs, eq. 9 hint and eq. 10 intervals."""
    samples = _check_samples(samples)
    sigma_r, sigma_l = mc_standard_deviations(samples)
    sigma_sym = symmetric_hint(samples)
    sym_r, sym_l = symmetric_intervals(sigma_r, sigma_l, sigma_sym, gamma_r, gamma_l)
    mean = samples.mean(axis=0)
    return MCSummary(mean[:, 0], mean[:, 1], sigma_r, sigma_l, sigma_sym, sym_r, sym_l)


@dataclass(frozen=True)
class IntervalSettings:
    """How intervals are formed from MC dropout: ``half_width = scale * (sigma + gamma * sigma_sym)`` per side
    (eq. 10 as in Algorithm 1, times a calibration scale).

    ``kind`` is ``"calibrated"`` (conformal scale from ``calibration.json``, nominal ``coverage``) or
    ``"uncalibrated"`` (a Gaussian +-1.96 sigma, no coverage guarantee: ``coverage`` is None); ``description`` says
    where the values come from.
    """

    gamma_r: float
    gamma_l: float
    scale_r: float
    scale_l: float
    description: str
    kind: str = "uncalibrated"
    coverage: float | None = None

    def as_dict(self) -> dict[str, float | str | None]:
        return asdict(self)

    def half_widths(self, summary: MCSummary) -> tuple[np.ndarray, np.ndarray]:
        """Right and left interval half-widths: ``scale * sigma^sym`` of a summary made with these gammas."""
        return self.scale_r * summary.sigma_sym_r, self.scale_l * summary.sigma_sym_l


def coverage_probability(truth: np.ndarray, centre: np.ndarray, half_width: np.ndarray) -> float:
    """CP (§4.4): fraction of cases whose truth lies in [centre - half_width, centre + half_width]."""
    truth, centre, half_width = (np.asarray(a, dtype=np.float64) for a in (truth, centre, half_width))
    return float(np.mean(np.abs(truth - centre) <= half_width))


def sharpness(half_width: np.ndarray, value_range: float) -> float:
    """Sharpness (§4.4) = 1 - normalised interval width = 1 - mean(2 * half_width) / value_range.

    Normalisation: the full interval width divided by the range of the target (``value_range``; in normalised
    SBR units the paper's range is 1, i.e. sbr_max), clipped to [0, 1].
    """
    width = np.mean(2.0 * np.asarray(half_width, dtype=np.float64)) / float(value_range)
    return float(np.clip(1.0 - width, 0.0, 1.0))


def interval_scores(truth: np.ndarray, centre: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """|y - yhat| / sigma per case: the smallest scale k at which centre +- k sigma covers the truth (§4.4).

    The score behind the sharpness-CP curve and the split-conformal scale; a zero sigma counts as the smallest
    positive float (an exact prediction then scores 0, any error an enormous score)."""
    truth, centre, sigma = (np.asarray(a, dtype=np.float64).ravel() for a in (truth, centre, sigma))
    return np.abs(truth - centre) / np.maximum(sigma, np.finfo(np.float64).tiny)


def conformal_scale(truth: np.ndarray, centre: np.ndarray, sigma: np.ndarray, coverage: float = 0.95) -> float:
    """Split-conformal scale k so that centre +- k sigma covers a new case with probability >= ``coverage``.

    Scores s_i = |y_i - yhat_i| / sigma_i on the calibration cases; k is their ceil((n + 1) coverage)-th
    smallest value (the finite-sample (n + 1) correction of split conformal prediction). Infinite when the
    calibration set is too small for the requested coverage. Beyond the paper.

    The order statistic is taken directly: ``np.quantile(..., method="higher")`` places quantiles on an (n - 1)
    grid and returns the next larger score (one rank too conservative), and ``method="inverted_cdf"`` at
    q = rank / n depends on how n * q rounds.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    scores = interval_scores(truth, centre, sigma)
    rank = int(np.ceil((len(scores) + 1) * coverage))
    if rank > len(scores):
        return float("inf")
    return float(np.sort(scores)[rank - 1])


def sharpness_cp_curve(
    truth: np.ndarray, centre: np.ndarray, sigma: np.ndarray, value_range: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sharpness-CP curve (§4.4, Fig. 4) of the intervals centre +- k sigma for k from 0 until CP = 100 %.

    Exact, grid-free: the curve changes only where k crosses a case's score |y - yhat| / sigma, so the points
    are k = 0 and every sorted score. Returns (k, CP, sharpness) arrays, CP ascending from ~0 to 1.
    """
    truth, centre, sigma = (np.asarray(a, dtype=np.float64).ravel() for a in (truth, centre, sigma))
    if not len(truth) == len(centre) == len(sigma) or len(truth) == 0:
        raise ValueError("truth, centre and sigma must be non-empty and of equal length")
    scores = np.sort(interval_scores(truth, centre, sigma))
    ks = np.concatenate([[0.0], scores])
    # CP from the scores themselves: recomputing |y - yhat| <= k sigma could drop a case at its own k by rounding
    cps = np.searchsorted(scores, ks, side="right") / len(scores)
    sharp = np.array([sharpness(k * sigma, value_range) for k in ks])
    return ks, cps, sharp


def sharpness_cp_auc(truth: np.ndarray, centre: np.ndarray, sigma: np.ndarray, value_range: float = 1.0) -> float:
    """Area under the sharpness-CP curve (§4.4, Table 5), trapezoidal in CP from the k = 0 point to CP = 1."""
    _, cps, sharp = sharpness_cp_curve(truth, centre, sigma, value_range)
    return float(np.trapezoid(sharp, cps))


def select_gamma(
    truth: np.ndarray,
    centre: np.ndarray,
    sigma: np.ndarray,
    sigma_sym: np.ndarray,
    grid: Sequence[float],
    value_range: float = 1.0,
) -> tuple[float, float]:
    """Algorithm 1's choice of one side's gamma: the grid value whose intervals sigma + gamma sigma_sym (eq. 10)
    give the largest sharpness-CP AUC on labelled (validation) cases (§3.4.2, Table 5). The first on ties.

    Returns (gamma, its AUC). ``value_range`` normalises the widths as in :func:`sharpness`.
    """
    if not len(grid):
        raise ValueError("the gamma grid is empty")
    aucs = [sharpness_cp_auc(truth, centre, np.asarray(sigma) + g * np.asarray(sigma_sym), value_range) for g in grid]
    best = int(np.argmax(aucs))
    return float(grid[best]), float(aucs[best])
