"""Binding ratios of the DAT-Net paper ("Binding Ratio Analysis"): the conventional BR, the deep-learning-guided
DL-BR, and the group comparison it reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
from scipy import stats

__all__ = ["binding_ratio", "salient_region", "dl_binding_ratio", "group_comparison"]


def binding_ratio(volume: np.ndarray, specific: np.ndarray, reference: np.ndarray) -> float:
    """BR = (C_specific - C_nonspecific) / C_nonspecific with C the mean counts in the ``specific`` mask and in the
    ``reference`` mask (the DAT-Net paper's BR, occipital reference; also the DATquant SBR of a striatum)."""
    nonspecific = float(np.asarray(volume)[reference].mean())
    return (float(np.asarray(volume)[specific].mean()) - nonspecific) / nonspecific


def salient_region(saliency: np.ndarray, within: np.ndarray, threshold: float = 0.7) -> np.ndarray:
    """The voxels of ``within`` whose saliency, min-max normalised there to [0, 1], is at least ``threshold``. The
    paper keeps "the top 70 % salient regions" of its normalised saliency maps against noise; read here as
    normalised saliency >= 0.7 (its supplement, not public here, may define it otherwise: ``threshold`` is a
    config value)."""
    values = np.asarray(saliency, dtype=np.float64)
    low, high = values[within].min(), values[within].max()
    return within & (values >= low + threshold * (high - low))


def dl_binding_ratio(volume: np.ndarray, saliency: np.ndarray, reference: np.ndarray, within: np.ndarray,
                     threshold: float = 0.7) -> float:  # fmt: skip
    """DL-BR: :func:`binding_ratio` with the :func:`salient_region` of ``saliency`` as the specific region."""
    return binding_ratio(volume, salient_region(saliency, within, threshold), reference)


def group_comparison(values: Sequence[float], groups: Sequence[str], compared: Sequence[str]) -> dict:
    """Kruskal-Wallis across the ``compared`` groups and two-sided Mann-Whitney U for each pair (scipy), with the
    group medians: the comparisons of the paper's Fig. 6."""
    by_group: Mapping[str, np.ndarray] = {
        g: np.array([v for v, h in zip(values, groups, strict=True) if h == g]) for g in compared
    }
    present = [g for g in compared if by_group[g].size]
    result: dict = {"median": {g: float(np.median(by_group[g])) for g in present}}
    if len(present) >= 2:
        result["kruskal_p"] = float(stats.kruskal(*(by_group[g] for g in present)).pvalue)
        result["pairs"] = {f"{a} vs {b}": float(stats.mannwhitneyu(by_group[a], by_group[b]).pvalue)
                           for a, b in combinations(present, 2)}  # fmt: skip
    return result
