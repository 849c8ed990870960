"""The MONAI Label infer task: a classification-style JSON result and the patch pair as an overlay label.

MONAI Label has no regression task type, and its ``BundleInferTask`` guesses a segmentation task, so this is a
custom ``BasicInferTask``: ``LoadImaged`` reads the volume (its affine maps the clicks), :meth:`run_inferer` runs the
bundle's own ``inference`` workflow on the image file (so the numbers are those of ``python -m bundle run
inference``), :class:`PatchBoxLabeld` draws the two patches as labels 1 (right) and 2 (left), and :meth:`writer`
returns the label file and the JSON (both SBRs, intervals, abnormal flags, centroids). No inverse transforms run:
the label is drawn on the grid of the file as stored.

A case the task cannot predict (an unreadable volume, not two clicks, the localiser's refusal or absence, the
workflow's one-line error) raises :class:`CaseRefused` with one line naming the case; the server app
(``apps/label/main.py``) sends it to the client as HTTP 422 with that line as the ``detail``. Model files the
workflow cannot use raise :class:`ModelFilesUnusable` (HTTP 503), not the workflow's ``SystemExit``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.transforms import LoadImaged, Transform
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

import bundle
from bundle.constants import MC_SAMPLES, PATCH_SIZE, SIDES, TARGET_SPACING
from bundle.localiser.centroids import voxel_to_world, world_to_voxel
from bundle.resources import bundle_root
from bundle.serving.case import CaseFailed, default_checkpoint, localise_case, predict_case

__all__ = ["SBRInferTask", "CaseRefused", "ModelFilesUnusable", "ReadVolumed", "PatchBoxLabeld", "clicks_to_centroids"]

logger = logging.getLogger(__name__)

LABELS = {"right nigral patch": 1, "left nigral patch": 2, "both nigral patches": 3}
"""Label values of the overlay (the two patches overlap near the midline: 25 mm wide, centres about 20 mm apart)."""


class CaseRefused(ValueError):
    """The task cannot predict this case; the message is one line that starts with the case id."""


class ModelFilesUnusable(RuntimeError):
    """The inference workflow stopped on the models folder's files (e.g. an unreadable checkpoint or calibration),
    whatever the case; the message is the workflow's one line."""


def case_id_of(path: str | os.PathLike) -> str:
    """The case id of an image path: its file (or DICOM folder) name without extensions."""
    return Path(str(path)).name.split(".")[0] or "image"


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an error's message (its class name when it has none), at most ``limit`` chars."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReadVolumed(Transform):
    """MONAI's ``LoadImaged`` (image only) of ``key``; a file it cannot read is a :class:`CaseRefused` naming the
    case and the reader's first line, not a traceback."""

    def __init__(self, key: str = "image") -> None:
        self.key = key
        self.load = LoadImaged(keys=key, image_only=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        path = str(data[self.key])
        try:
            return self.load(data)
        except Exception as err:  # any reader failure is the input's: one line, without the server's folders
            name = Path(path).name
            reason = one_line(err).replace(path, name) if path else one_line(err)
            raise CaseRefused(f"{case_id_of(path)}: image: cannot read {name} ({reason})") from None


def clicks_to_centroids(points: Sequence[Sequence[float]], affine: np.ndarray) -> dict[str, list[float]]:
    """Two clicks (voxel coordinates of the stored image) as world (RAS) centroids; the one further to the
    subject's right (larger RAS x) is the right nigrosome-1, whatever the click order."""
    if len(points) != 2:
        raise ValueError(f"clicks: give two points (right and left nigrosome-1), got {len(points)}")
    try:
        voxels = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        voxels = np.empty(0)
    if voxels.shape != (2, 3) or not np.isfinite(voxels).all():
        raise ValueError(f"clicks: each point needs three voxel coordinates (x, y, z), got {list(points)}")
    world = voxel_to_world(affine, voxels)
    right, left = (world[0], world[1]) if world[0][0] > world[1][0] else (world[1], world[0])
    return {"right": [float(v) for v in right], "left": [float(v) for v in left]}


class PatchBoxLabeld(Transform):
    """Label image of the two network patches on the image grid: voxels whose centre lies in the patch box around
    a side's centroid get that side's label, 3 where both patches cover them. The box is ``patch_size`` voxels of
    ``spacing`` mm, axis-aligned in RAS and half-open, so a grid of that spacing gets exactly ``patch_size`` voxels.

    Reads ``image_key`` (a MetaTensor with its affine) and ``centroids_key`` (world RAS centroid per side); writes
    ``label_key`` (uint8, the image's spatial shape).
    """

    def __init__(
        self,
        label_key: str = "pred",
        image_key: str = "image",
        centroids_key: str = "nigrosome_centroids",
        patch_size: Sequence[int] = PATCH_SIZE,
        spacing: Sequence[float] = TARGET_SPACING,
    ) -> None:
        self.label_key, self.image_key, self.centroids_key = label_key, image_key, centroids_key
        self.half_extent = np.asarray(patch_size, dtype=float) * np.asarray(spacing, dtype=float) / 2

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        shape = tuple(image.shape[-3:])
        grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
        world = voxel_to_world(np.asarray(image.affine), grid)
        label = np.zeros(len(grid), dtype=np.uint8)
        for side, value in zip(SIDES, (1, 2), strict=True):
            offset = world - np.asarray(d[self.centroids_key][side])
            inside = np.all((offset >= -self.half_extent) & (offset < self.half_extent), axis=1)
            label[inside] |= value  # 1 | 2 = 3 where the patches overlap
        d[self.label_key] = label.reshape(shape)
        return d


class SBRInferTask(BasicInferTask):
    """Both striatal SBRs with intervals from an SMWI volume; foreground clicks are the nigrosome-1 centroids.

    Args:
        models: folder with ``model.ts`` / ``model.pt``, ``localiser.pt`` and optionally ``calibration.json``
            (default: ``models/`` of :func:`bundle.resources.bundle_root`, a source checkout's only).
        mc_samples: Monte-Carlo dropout samples (0: no interval).
        overrides: further config overrides of the bundle's inference workflow.
    """

    def __init__(
        self,
        models: str | os.PathLike | None = None,
        mc_samples: int = MC_SAMPLES,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.models = Path(models) if models else bundle_root() / "models"
        self.mc_samples = int(mc_samples)
        self.overrides = dict(overrides or {})
        super().__init__(
            path=str(default_checkpoint(self.models)), network=None, type=InferType.CLASSIFICATION, labels=LABELS,
            dimension=3, description="Striatal DaT SBR (right, left) with intervals from nigral SMWI - research use "
            "only. Click the right and left nigrosome-1 (or none: automatic localisation).",
            config={"mc_samples": self.mc_samples}, load_strict=False,
        )  # fmt: skip

    def is_valid(self) -> bool:
        return default_checkpoint(self.models).is_file()

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> list:
        return [ReadVolumed("image")]

    def inverse_transforms(self, data: Mapping[str, Any] | None = None) -> None:
        return None  # the label is drawn on the stored grid: nothing to restore

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> list:
        return [PatchBoxLabeld()]

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        """The bundle's ``inference`` workflow on ``data["image_path"]`` with the clicks (or the localiser)."""
        case_id = case_id_of(data["image_path"])
        clicks = data.get("foreground") or []
        case = {"id": case_id, "image": str(Path(str(data["image_path"])).resolve())}
        overrides = {"localiser_path": str(self.models / "localiser.pt"), **self.overrides}
        try:
            if clicks:
                centroids = clicks_to_centroids(clicks, np.asarray(data["image"].affine))
            elif not Path(overrides["localiser_path"]).is_file():
                raise CaseRefused(
                    f"{case_id}: no clicks and no localiser at {overrides['localiser_path']} (click the right and left "
                    "nigrosome-1, or give a models folder with localiser.pt)"
                )
            else:
                found = localise_case({**case, "centroid_space": "auto"}, overrides)
                centroids = {side: found[f"centroid_{side}"] for side in SIDES}
            case |= {
                "centroid_right": centroids["right"],
                "centroid_left": centroids["left"],
                "centroid_space": "world",
            }
            mc_samples = int(data.get("mc_samples", self.mc_samples))
            with tempfile.TemporaryDirectory() as tmp:
                prediction = predict_case(case, tmp, default_checkpoint(self.models), mc_samples, overrides=overrides)
        except (CaseFailed, ValueError) as err:
            message = one_line(err, limit=1000)
            raise CaseRefused(message if message.startswith(f"{case_id}: ") else f"{case_id}: {message}") from None
        except SystemExit as stopped:  # the workflow's checks stop it (their line is on stderr, the cause in context)
            cause = stopped.__context__
            reason = one_line(cause, limit=1000) if cause is not None else f"exit code {stopped.code}"
            raise ModelFilesUnusable(f"the inference workflow stopped: {reason}") from None
        data["result"] = {**prediction.summary(), "centroid_source": "clicks" if clicks else "localiser",
                          "centroids_world_ras": centroids, "bundle_version": bundle.__version__}  # fmt: skip
        data["nigrosome_centroids"] = centroids
        affine = np.asarray(data["image"].affine)  # MONAI Label passes "centroids" (voxels) on to OHIF
        data["centroids"] = [
            {name: [int(round(v)) for v in world_to_voxel(affine, np.asarray([centroids[side]]))[0]]}
            for name, side in zip(list(LABELS)[:2], SIDES, strict=True)
        ]
        return data

    def writer(self, data: Mapping[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """The label as NIfTI on the image's grid (a temporary file MONAI Label sends and removes) and the JSON."""
        handle, path = tempfile.mkstemp(suffix=".nii.gz", prefix="nigral_patches_")
        os.close(handle)
        nib.save(nib.Nifti1Image(np.asarray(data["pred"], dtype=np.uint8), np.asarray(data["image"].affine)), path)
        return path, {**data["result"], "label_names": LABELS}
