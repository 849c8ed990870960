"""The ``explain`` workflow's step: per case, every method's map of both patches as NIfTI in world space and a PNG.

Right-side maps are computed on the mirrored right patch (what F sees) and flipped back with MONAI's ``Flip``, which
also restores the patch's affine, so every map overlays the original volume in any viewer.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Flip
from torch import nn
from tqdm import tqdm

from bundle.constants import SIDES
from bundle.data.patches import LR_AXIS
from bundle.data.readers import error_message
from bundle.explain.figures import explanation_panel
from bundle.explain.maps import METHODS, explain_patches
from bundle.io import atomic_open, inside, safe_file_stem, write_csv

__all__ = ["Explainer"]

logger = logging.getLogger(__name__)


def _save_nifti(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(gzip.compress(nib.Nifti1Image(volume.astype(np.float32), affine).to_bytes(), mtime=0))


class Explainer:
    """Explain each case of ``cases`` with ``methods``; outputs in ``output_dir/<id>/`` and ``explain.csv``.

    Args:
        network: the single-side regressor F (float32, eval mode); the paired model applies it to both patches.
        load: transform giving, for one datalist case, ``patch_right`` (mirrored) and ``patch_left`` as MetaTensors
            with their affines, divided by their means, and ``label`` (normalised true SBRs, NaN when unknown).
        cases: the datalist section's cases.
        output_dir: where the maps go.
        sbr_max: SBR of a normalised value of 1.
        methods: method names (see :data:`bundle.explain.maps.METHODS`).
        figures: write the PNG panel of each case.
    """

    def __init__(
        self,
        network: nn.Module,
        load: Callable[[dict[str, Any]], dict[str, Any]],
        cases: Sequence[Mapping[str, Any]],
        output_dir: str | os.PathLike,
        sbr_max: float,
        methods: Sequence[str] = tuple(METHODS),
        figures: bool = True,
    ) -> None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown explanation method(s) {unknown}; choose from {sorted(METHODS)}")
        self.network = network.float().eval()
        self.load, self.cases = load, list(cases)
        self.output_dir = Path(output_dir)
        self.sbr_max = float(sbr_max)
        self.methods = list(methods)
        self.figures = bool(figures)
        self.unmirror = Flip(spatial_axis=LR_AXIS)

    def run(self) -> list[dict[str, Any]]:
        """Explain every case (a failing case is logged and listed in ``errors.csv``; the others go on)."""
        rows, errors = [], []
        start = time.perf_counter()
        for case in tqdm(self.cases, desc="Explaining", disable=None):
            try:
                rows.append(self.explain(dict(case)))
            except Exception as err:
                case_id = str(case.get("id", "?"))
                message = error_message(err)
                message = message if message.startswith(f"{case_id}:") else f"{case_id}: {message}"
                logger.error("skipping case: %s", message)
                errors.append({"id": case_id, "error": message})
        columns = ["id", "pred_right", "pred_left", "true_right", "true_left", "folder"]
        write_csv(self.output_dir / "explain.csv", columns, rows)
        write_csv(self.output_dir / "errors.csv", ["id", "error"], errors)
        logger.info("explained %d cases with %s in %.1f s (%d errors) -> %s", len(rows), ", ".join(self.methods),
                    time.perf_counter() - start, len(errors), self.output_dir)  # fmt: skip
        return rows

    def explain(self, case: dict[str, Any]) -> dict[str, Any]:
        """Maps of one case; returns its ``explain.csv`` row."""
        data = self.load(case)
        folder = inside(self.output_dir, safe_file_stem(str(case["id"])))
        folder.mkdir(parents=True, exist_ok=True)
        patches, maps, predicted = {}, {m: {} for m in self.methods}, {}
        pair = torch.stack([data[f"patch_{side}"].as_tensor().float() for side in SIDES])  # [2, 1, X, Y, Z]
        with torch.no_grad():
            predicted = dict(zip(SIDES, (self.network(pair).reshape(-1) * self.sbr_max).tolist(), strict=True))
        found = {method: explain_patches(self.network, pair, method) for method in self.methods}
        for i, side in enumerate(SIDES):
            patch = data[f"patch_{side}"]
            as_subject = self.unmirror(patch) if side == "right" else patch  # RAS, affine of the real position
            affine = np.asarray(as_subject.affine, dtype=np.float64)
            patches[side] = as_subject[0].numpy()
            _save_nifti(patches[side], affine, folder / f"patch_{side}.nii.gz")
            for method in self.methods:
                saliency = MetaTensor(found[method][i][None], affine=patch.affine)
                saliency = self.unmirror(saliency) if side == "right" else saliency
                maps[method][side] = saliency[0].numpy()
                _save_nifti(maps[method][side], affine, folder / f"{method}_{side}.nii.gz")
        label = np.asarray(data.get("label", [np.nan, np.nan]), dtype=np.float64).reshape(-1) * self.sbr_max
        truth = {side: (None if np.isnan(v) else round(float(v), 4)) for side, v in zip(SIDES, label, strict=True)}
        if self.figures:
            centre = tuple(int(s) // 2 for s in patches["left"].shape)
            words = ", ".join(
                f"{side} predicted {predicted[side]:.2f}" + (f" / true {truth[side]:.2f}" if truth[side] else "")
                for side in SIDES
            )
            explanation_panel(patches, maps, centre, f"{case['id']}: SBR {words} (research use only)",
                              folder / "panel.png")  # fmt: skip
        return {"id": case["id"], "pred_right": round(predicted["right"], 4), "pred_left": round(predicted["left"], 4),
                "true_right": truth["right"], "true_left": truth["left"], "folder": folder.name}  # fmt: skip
