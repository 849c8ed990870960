"""Intensity and target transforms of the pair: patch normalisation, SBR targets in normalised units, and the
postprocessing that brings predictions back to SBR units (the only place that multiplies by ``sbr_max``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle.constants import DEFAULT_SBR_MAX
from bundle.data.datalist import sbr_problem
from bundle.data.patches import case_id

__all__ = ["DivideByMeand", "SBRTargetd", "SBRUnitsd"]


class DivideByMeand(MapTransform):
    """Divide each patch by its own mean intensity (the paper's patch normalisation)."""

    def __init__(self, keys: KeysCollection, eps: float = 1e-6, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.eps = eps

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mean = float(d[key].float().mean())
            if not np.isfinite(mean) or abs(mean) < self.eps:
                raise ValueError(f"{case_id(d)}: {key}: patch mean is {mean:g}, cannot normalise by it")
            d[key] = d[key] / mean
        return d


class SBRTargetd(MapTransform):
    """Build the target ``label = [sbr_right, sbr_left] / sbr_max`` (float32, shape [2]).

    Args:
        keys: the right and left SBR keys, in that order.
        sbr_max: normalisation constant (paper: 6.84, the cohort's maximum SBR; ``bundle.constants.DEFAULT_SBR_MAX``).
        label_key: output key.
        allow_missing_keys: accept cases where both SBRs are absent (inference on unlabelled cases).
        fill_missing: label value for such cases (e.g. NaN, so labelled and unlabelled cases can share a batch);
            None leaves the label out.
    """

    def __init__(
        self,
        keys: KeysCollection = ("sbr_right", "sbr_left"),
        sbr_max: float = DEFAULT_SBR_MAX,
        label_key: str = "label",
        allow_missing_keys: bool = False,
        fill_missing: float | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"SBRTargetd needs the right and left SBR keys, got {self.keys}.")
        self.fill_missing = fill_missing
        if sbr_max <= 0:
            raise ValueError(f"sbr_max must be positive, got {sbr_max}.")
        self.sbr_max = float(sbr_max)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [k for k in self.keys if d.get(k) is not None]
        if not present and self.allow_missing_keys:
            if self.fill_missing is not None:
                d[self.label_key] = torch.full((2,), float(self.fill_missing), dtype=torch.float32)
            return d
        values = []
        for key in self.keys:
            value = d.get(key)
            if problem := sbr_problem(value):
                raise ValueError(f"{case_id(d)}: {key}: {problem}")
            values.append(float(value) / self.sbr_max)
        d[self.label_key] = torch.tensor(values, dtype=torch.float32)
        return d


class SBRUnitsd(MapTransform):
    """Postprocessing: ``value * sbr_max`` (float64) for the network's outputs and targets in normalised units.

    The network and the loss work in SBR / sbr_max; this is the one place that turns their values back into SBR
    units, so that writers, calibration, metrics, plots and reports downstream never scale again.

    Args:
        keys: keys holding normalised values (e.g. ``pred`` MC samples and ``label``).
        sbr_max: the normalisation the targets were built with (:class:`SBRTargetd`).
        allow_missing_keys: skip absent keys (e.g. no ``label`` at inference on unlabelled cases).
    """

    def __init__(
        self,
        keys: KeysCollection = ("pred", "label"),
        sbr_max: float = DEFAULT_SBR_MAX,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if sbr_max <= 0:
            raise ValueError(f"sbr_max must be positive, got {sbr_max}.")
        self.sbr_max = float(sbr_max)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(d[key]).double() * self.sbr_max
        return d
