"""Preprocessing of template-space DaT volumes: the LRP paper's intensity scaling and hemisphere mirroring, and its
three input settings (full image, striatum only, without striatum)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle.dat.template import SHAPE, region_masks, striatal_box

__all__ = ["SETTINGS", "ScaleToReferenced", "LowerSideLeftd", "DaTSettingd", "setting_shape", "to_template"]

SETTINGS = ("full", "striatum", "without_striatum")


def _check_grid(key: Hashable, image: Any, meta: Mapping | None) -> None:
    if tuple(image.shape[1:]) != SHAPE:
        name = (meta or {}).get("filename_or_obj", key)
        raise ValueError(f"{name}: volume shape {tuple(image.shape[1:])} is not the template's {SHAPE}; "
                         "register it to the template first")  # fmt: skip


class ScaleToReferenced(MapTransform):
    """Divide by the 75th percentile of the reference region (brain without striata, thalamus and midbrain), as the
    LRP paper scales its SPECT (Methods, "Image preprocessing")."""

    def __init__(self, keys: KeysCollection, percentile: float = 75.0) -> None:
        super().__init__(keys)
        self.percentile = percentile
        self.mask = torch.as_tensor(region_masks()["reference"])

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            _check_grid(key, d[key], getattr(d[key], "meta", None))
            reference = torch.quantile(torch.as_tensor(d[key])[0][self.mask].float(), self.percentile / 100)
            d[key] = d[key] / reference.clamp_min(1e-6)
        return d


class LowerSideLeftd(MapTransform):
    """Mirror the volume at the midsagittal plane when the right putamen's uptake is lower, so the lower side is
    always on the left (the LRP paper's 'ipsilateral' = left). Records the flip in ``<key>_mirrored``."""

    def __init__(self, keys: KeysCollection) -> None:
        super().__init__(keys)
        masks = region_masks()
        self.right, self.left = torch.as_tensor(masks["putamen_right"]), torch.as_tensor(masks["putamen_left"])

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            volume = torch.as_tensor(d[key])[0]
            mirrored = bool(volume[self.right].mean() < volume[self.left].mean())
            if mirrored:
                d[key] = torch.flip(d[key], dims=(1,))  # axis 0 of the volume is x (right-left)
            d[f"{key}_mirrored"] = mirrored
        return d


def setting_shape(setting: str) -> tuple[int, int, int]:
    """Spatial shape of the network input in a setting."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    return tuple(s.stop - s.start for s in striatal_box()) if setting == "striatum" else SHAPE  # type: ignore[return-value]


class DaTSettingd(MapTransform):
    """The LRP paper's input settings (its Fig. 6): ``full``; ``striatum``: the striatal box cropped; or
    ``without_striatum``: the full volume with the box set to zero."""

    def __init__(self, keys: KeysCollection, setting: str = "full") -> None:
        super().__init__(keys)
        setting_shape(setting)
        self.setting, self.box = setting, striatal_box()

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.setting == "striatum":
                d[key] = d[key][(slice(None), *self.box)]
            elif self.setting == "without_striatum":
                d[key] = d[key].clone()
                d[key][(slice(None), *self.box)] = 0
        return d


def to_template(volume: np.ndarray, setting: str) -> np.ndarray:
    """A map of the network input's grid put back on the template grid (zero outside a ``striatum`` crop)."""
    if setting != "striatum":
        return volume
    full = np.zeros(SHAPE, dtype=volume.dtype)
    full[striatal_box()] = volume
    return full
