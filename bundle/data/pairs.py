"""The patch-pair preprocessing of every workflow, defined once.

One case (any datalist form) becomes the network's input, as the paper's Methods describe it: the two nigral patches
of 50 x 50 x 20 voxels around the nigrosome-1 centroids, the right one mirrored (``LoadNigralPatchesd``), the SBR
targets divided by ``sbr_max`` (``SBRTargetd``), each patch divided by its own mean (``DivideByMeand``) and the pair
stacked as the two channels of ``image``. Training inserts its random crop (position jitter) before the
normalisation and its intensity augmentation after it; inference may run the localiser first and keeps only the
keys its writers read. Training, validation and every inference-side workflow build it from this one class, so a
reader option given on the command line reaches all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    RandSpatialCropd,
    SelectItemsd,
    ToDeviced,
)

from bundle.constants import DEFAULT_SBR_MAX, PATCH_SIZE
from bundle.data.loading import LoadNigralPatchesd
from bundle.data.transforms import DivideByMeand, SBRTargetd

__all__ = ["NigralPatchPaird", "PATCHES", "LABELS_REQUIRED", "LABELS_OPTIONAL"]

PATCHES = ("patch_right", "patch_left")
"""Keys of the two patches until they are stacked into ``image``."""
LABELS_REQUIRED, LABELS_OPTIONAL = "required", "optional"


class NigralPatchPaird(Compose):
    """Load, mirror, normalise and stack one case's nigral patch pair (a MONAI ``Compose`` of the steps below).

    Steps: ``first`` (e.g. the automatic localiser) -> ``LoadNigralPatchesd`` -> ``SBRTargetd`` -> [``ToDeviced`` to
    ``cache_device``] -> [``RandSpatialCropd`` back to ``patch_size`` when ``jitter`` is set] -> ``DivideByMeand``
    -> ``augmentation`` -> ``ConcatItemsd`` into ``image`` -> ``DeleteItemsd`` -> ``EnsureTyped`` ->
    [``SelectItemsd`` of ``keep``]. MONAI's ``CacheDataset`` caches every step before the first random one.

    Args:
        patch_size: voxels of each patch (Table 1's input: 50 x 50 x 20).
        sbr_max: normalisation of the SBR targets.
        resample: resample volumes to the 0.5 x 0.5 x 1 mm grid first (``LoadNigralPatchesd``).
        dicom_reader, mat_lr_axis, mat_axcodes: reader options of ``LoadNigralPatchesd``.
        labels: ``"required"`` (training, validation) or ``"optional"`` (inference: an unlabelled case gets NaN).
        jitter: training's position jitter in voxels: the patches are loaded ``jitter`` voxels larger on each side
            and randomly cropped back; None for no random crop.
        augmentation: random transforms of the normalised patches (training).
        cache_device: device the deterministic part is moved to (training's ``cache_on_device``); None to stay.
        first: transforms that run before loading (inference: the localiser for cases without centroids).
        keep: keys kept at the end (inference); None keeps all.
    """

    def __init__(
        self,
        patch_size: Sequence[int] = PATCH_SIZE,
        sbr_max: float = DEFAULT_SBR_MAX,
        resample: bool = True,
        dicom_reader: str = "itk",
        mat_lr_axis: int = 1,
        mat_axcodes: str | None = None,
        labels: str = LABELS_REQUIRED,
        jitter: int | None = None,
        augmentation: Sequence[Any] = (),
        cache_device: torch.device | str | None = None,
        first: Sequence[Any] = (),
        keep: Sequence[str] | None = None,
    ) -> None:
        if labels not in (LABELS_REQUIRED, LABELS_OPTIONAL):
            raise ValueError(f"labels must be {LABELS_REQUIRED!r} or {LABELS_OPTIONAL!r}, got {labels!r}")
        optional = labels == LABELS_OPTIONAL
        load = LoadNigralPatchesd(
            patch_size=patch_size,
            margin=jitter or 0,
            resample=resample,
            dicom_reader=dicom_reader,
            mat_lr_axis=mat_lr_axis,
            mat_axcodes=mat_axcodes,
        )
        nan = float("nan") if optional else None
        target = SBRTargetd(sbr_max=sbr_max, allow_missing_keys=optional, fill_missing=nan)
        move = [ToDeviced(keys=[*PATCHES, "label"], device=cache_device)] if cache_device is not None else []
        crop = [RandSpatialCropd(keys=PATCHES, roi_size=patch_size, random_size=False)] if jitter is not None else []
        self.n_unpaired = len(first) + 2 + len(move) + len(crop) + 1
        stack = [
            ConcatItemsd(keys=PATCHES, name="image", dim=0),
            DeleteItemsd(keys=PATCHES),
            EnsureTyped(keys=["image", "label"], track_meta=False, allow_missing_keys=optional),
        ]
        select = [SelectItemsd(keys=keep, allow_missing_keys=True)] if keep is not None else []
        super().__init__(
            [*first, load, target, *move, *crop, DivideByMeand(keys=PATCHES), *augmentation, *stack, *select]
        )

    def unpaired(self) -> Compose:
        """The steps up to the normalisation, the two patches kept apart (the explain workflow's input)."""
        return Compose(self.transforms[: self.n_unpaired])
