"""The companion bundles' cases: a datalist section (or one fold of k-fold cross-validation) and the cases whose image
is a readable NIfTI on the template grid, the others reported one line each in ``errors.csv``."""

from __future__ import annotations

import logging
import pathlib

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist, partition_dataset

from bundle.dat.template import AFFINE, SHAPE
from bundle.io import write_csv

__all__ = ["fold_cases", "checked_cases"]

logger = logging.getLogger(__name__)


def fold_cases(datalist: str, section: str, folds: int = 0, fold: int = 0, base_dir: str | None = None) -> list[dict]:
    """The ``section`` ("training" or "validation") of a datalist; with ``folds`` >= 2, k-fold cross-validation
    instead: training and validation pooled and split into ``folds`` parts (seeded), part ``fold`` validating."""
    if folds < 2:
        return load_decathlon_datalist(datalist, True, section, base_dir=base_dir)
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0 .. {folds - 1}, got {fold}")
    sections = [load_decathlon_datalist(datalist, True, name, base_dir=base_dir) for name in ("training", "validation")]
    pooled = [case for cases in sections for case in cases]
    parts = partition_dataset(pooled, num_partitions=folds, shuffle=True, seed=0)
    return parts[fold] if section == "validation" else [c for k, part in enumerate(parts) if k != fold for c in part]


def checked_cases(datalist: str, section: str, base_dir: str | None = None,
                  output_dir: str | None = None) -> list[dict]:  # fmt: skip
    """The cases of a datalist section whose image is a readable NIfTI on the template grid. Every other case is
    logged as one line naming it and the problem, and listed in ``<output_dir>/errors.csv``; the rest go on."""
    good, errors = [], []
    for case in load_decathlon_datalist(datalist, True, section, base_dir=base_dir):
        case_id = str(case.get("id", case.get("image")))
        try:
            image = nib.load(case["image"])
            if tuple(image.shape) != SHAPE or not np.allclose(image.affine, AFFINE, atol=1e-3):
                raise ValueError(f"grid {tuple(image.shape)} / affine is not the template's {SHAPE}; register it first")
        except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            logger.error("%s: %s", case_id, message)
            errors.append({"id": case_id, "image": case.get("image"), "error": message})
            continue
        good.append({**case, "id": case_id})
    if output_dir is not None:  # this run's refusals only: an earlier run's list never stays beside new outputs
        report = pathlib.Path(output_dir) / "errors.csv"
        if errors:
            report.parent.mkdir(parents=True, exist_ok=True)
            write_csv(report, ["id", "image", "error"], errors)
        else:
            report.unlink(missing_ok=True)
    if not good:
        raise ValueError(f"{datalist}: no usable case in section {section!r} ({len(errors)} refused)")
    return good
