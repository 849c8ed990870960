"""The localiser at work: its validation metric, ``centroids.csv``, and automatic centroids for inference.

- :class:`LocalisationError`: mean distance (mm) between predicted and target heat-map peaks, an Ignite metric.
- :func:`locate`: one case's heat maps -> both centres in scanner RAS mm and in the file's voxel indices, with the
  per-side confidence (heat-map peak).
- :class:`CentroidWriter`: the ``localise`` workflow's handler writing ``centroids.csv`` and ``errors.csv``.
- :class:`AutoCentroidsd`: fills the centroids of cases that have none (or ``"centroid_space": "auto"``) by running
  the localiser, before the regressor's patch extraction; an implausible result is a one-line error for that case.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import Compose, Transform

from bundle.constants import SIDES
from bundle.io import staged_outputs, write_csv
from bundle.localiser.centroids import localiser_loading, voxel_to_world, world_to_voxel
from bundle.localiser.model import (
    NigrosomeLocaliser,
    Plausibility,
    decode_heatmaps,
    implausibility,
    mirror_averaged,
)
from bundle.workflows.checkpoints import read_checkpoint

__all__ = ["CENTROID_COLUMNS", "LocalisationError", "locate", "CentroidWriter", "AutoCentroidsd", "auto_centroids"]

CENTROID_COLUMNS = (
    "id", "right_x", "right_y", "right_z", "left_x", "left_y", "left_z", "space", "confidence_right",
    "confidence_left", "error_right_mm", "error_left_mm",
)  # fmt: skip
"""Columns of ``centroids.csv``: scanner RAS mm (``space`` is ``world``); the errors need annotated centroids."""

logger = logging.getLogger(__name__)


def _matrix(value: Any, index: int = 0) -> np.ndarray:
    """A 4x4 affine from a (possibly batched) tensor or array."""
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    return array[index] if array.ndim == 3 else array


class LocalisationError(Metric):
    """Mean Euclidean distance (mm) between the decoded peaks of predicted and target heat maps, over cases and
    sides; the spacing comes from the image affine in the engine output (``image`` as a MetaTensor)."""

    required_output_keys = ("pred", "label", "image")  # the image for its affine

    def reset(self) -> None:
        self._total, self._count = 0.0, 0

    def update(self, output: Sequence[Any]) -> None:
        pred, label, image = output
        for i in range(pred.shape[0]):
            spacing = np.linalg.norm(_matrix(image.affine, i)[:3, :3], axis=0)
            found, _ = decode_heatmaps(pred[i])
            truth, _ = decode_heatmaps(label[i])
            self._total += float(np.linalg.norm((found - truth) * spacing, axis=1).sum())
            self._count += found.shape[0]

    def compute(self) -> float:
        return self._total / max(self._count, 1)


def locate(heatmaps: torch.Tensor | np.ndarray, affine: Any, original_affine: Any) -> dict[str, np.ndarray]:
    """Both centres of one case from its heat maps [2, X, Y, Z] on the grid of ``affine``: ``world`` [2, 3] (scanner
    RAS mm), ``voxel`` [2, 3] (fractional indices of the original file's array, via ``original_affine``) and
    ``confidence`` [2] (heat-map peaks); rows right, left."""
    points, peaks = decode_heatmaps(heatmaps)
    world = voxel_to_world(_matrix(affine), points)
    return {"world": world, "voxel": world_to_voxel(_matrix(original_affine), world), "confidence": peaks}


class CentroidWriter:
    """Ignite handler of the ``localise`` workflow: per case, the located centres and confidences, the error (mm)
    against annotated centroids when the case has them, and the plausibility check; writes ``centroids.csv`` and
    ``errors.csv`` into ``output_dir`` together (staged) when the run completes.

    Expects ``decollate=False``, batch size 1 (volumes differ in size), and the batch's ``image`` as a MetaTensor
    whose meta holds ``original_affine``; ``centroids_world`` in the batch are the annotated centres (NaN if none).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        errors: Sequence[Mapping[str, str]] = (),
        limits: Plausibility | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.errors = errors
        self.limits = limits or Plausibility()
        self.rows: list[dict[str, Any]] = []
        self.problems: list[dict[str, str]] = []
        self.summary = ""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self) -> None:
        self.rows, self.problems = [], []

    def collect(self, engine: Engine) -> None:
        batch, pred = engine.state.batch, engine.state.output["pred"]
        image = batch["image"]
        for i in range(pred.shape[0]):
            case = str(batch["id"][i])
            found = locate(pred[i], image.affine[i], image.meta["original_affine"][i])
            truth = np.asarray(batch["centroids_world"][i], dtype=np.float64)
            errors = np.linalg.norm(found["world"] - truth, axis=1) if np.isfinite(truth).all() else [None, None]
            self.rows.append(_row(case, found, errors))
            if problem := implausibility(found["world"][0], found["world"][1], found["confidence"], self.limits):
                self.problems.append({"id": case, "error": f"{case}: localiser: {problem}"})

    def completed(self, engine: Engine) -> None:
        errors = [*self.errors, *self.problems]
        with staged_outputs(self.output_dir) as staging:
            write_csv(staging / "centroids.csv", CENTROID_COLUMNS, self.rows)
            write_csv(staging / "errors.csv", ("id", "error"), errors)
        measured = [r[f"error_{side}_mm"] for r in self.rows for side in SIDES if r[f"error_{side}_mm"] != ""]
        detail = f"; error median {np.median(measured):.2f} mm, max {np.max(measured):.2f} mm" if measured else ""
        self.summary = (
            f"located {len(self.rows)} cases ({len(self.problems)} implausible) and {len(self.errors)} errors"
            f"{detail} -> {self.output_dir / 'centroids.csv'}, errors.csv"
        )


def _row(case: str, found: Mapping[str, np.ndarray], errors: Sequence[float | None]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": case, "space": "world"}
    for k, side in enumerate(SIDES):
        row |= {f"{side}_{axis}": round(float(v), 3) for axis, v in zip("xyz", found["world"][k], strict=True)}
        row[f"confidence_{side}"] = round(float(found["confidence"][k]), 4)
        row[f"error_{side}_mm"] = "" if errors[k] is None else round(float(errors[k]), 3)
    return row


class AutoCentroidsd(Transform):
    """Fill the centroids of a case that has none (or ``"centroid_space": "auto"``) with the localiser's, as world
    coordinates, and record ``centroid_source`` (``annotated`` or ``localiser``) and the confidences.

    Args:
        network: the trained localiser (heat maps [B, 2, ...]), in eval mode.
        preprocessing: the localiser's deterministic preprocessing (loading, RAS, spacing, intensity).
        inferer: e.g. MONAI's ``SlidingWindowInferer`` (any field of view).
        limits: the plausibility limits; an implausible result raises a one-line ``ValueError`` for the case.
        device: where the network runs.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor] | None,
        preprocessing: Callable[[dict], dict],
        inferer: Inferer,
        limits: Plausibility | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.network = network
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.limits = limits or Plausibility()
        self.device = torch.device(device)

    def needs_localiser(self, case: Mapping[Hashable, Any]) -> bool:
        return case.get("image") is not None and (
            case.get("centroid_space") == "auto" or any(case.get(f"centroid_{s}") is None for s in SIDES)
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.needs_localiser(d):
            d.setdefault("centroid_source", "annotated" if d.get("image") is not None else "pre-cropped")
            return d
        case = str(d.get("id", "<no id>"))
        if self.network is None:
            raise ValueError(f"{case}: centroids: none given and no localiser (train one, or set --localiser_path)")
        item = self.preprocessing({k: v for k, v in d.items() if k in ("id", "image")})
        image = item["image"]
        with torch.no_grad():
            heatmaps = self.inferer(image[None].to(self.device), self.network)[0]
        found = locate(heatmaps, image.affine, image.meta["original_affine"])
        if problem := implausibility(found["world"][0], found["world"][1], found["confidence"], self.limits):
            raise ValueError(f"{case}: localiser: {problem}")
        d |= {
            "centroid_right": [float(v) for v in found["world"][0]],
            "centroid_left": [float(v) for v in found["world"][1]],
            "centroid_space": "world",
            "centroid_source": "localiser",
            "localiser_confidence": [float(c) for c in found["confidence"]],
        }
        return d


def sliding_window(roi: Sequence[int]) -> SlidingWindowInferer:
    """The localiser's inferer: windows of ``roi`` voxels, a quarter overlap, Gaussian blending (any field of view;
    smaller volumes are padded)."""
    return SlidingWindowInferer(roi_size=[int(n) for n in roi], sw_batch_size=1, overlap=0.25, mode="gaussian")


def auto_centroids(
    localiser_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    limits: Plausibility | None = None,
    dicom_reader: Literal["itk", "pydicom"] = "itk",
    mirror_average: bool = True,
) -> AutoCentroidsd:
    """:class:`AutoCentroidsd` with the localiser of ``localiser_path`` built from its own record (features, spacing,
    sliding-window size), reading DICOM folders with ``dicom_reader``, with test-time mirror averaging
    (:class:`~bundle.localiser.model.MirrorAveraged`) when ``mirror_average``; without that file, cases that need
    the localiser fail with a one-line error and the others run as before."""
    path = Path(localiser_path)
    if not path.is_file():
        return AutoCentroidsd(None, lambda d: d, sliding_window((16, 16, 16)), limits, device)
    trained = read_checkpoint(path)
    network = trained.load_into(NigrosomeLocaliser(**trained.network_args()), device)
    preprocessing = Compose(localiser_loading(network.spacing, dicom_reader))
    return AutoCentroidsd(mirror_averaged(network, mirror_average), preprocessing, sliding_window(network.roi), limits,
                          device)  # fmt: skip
