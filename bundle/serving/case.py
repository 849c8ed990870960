"""Predict one patient in-process with the bundle's own ``inference`` workflow (same preprocessing, localiser,
symmetric MC dropout, intervals and report as ``python -m monai.bundle run inference``)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bundle
from bundle.constants import ABNORMAL_SBR, SIDES
from bundle.io import unescape_cell, write_json

__all__ = ["BUNDLE_ROOT", "CaseFailed", "CasePrediction", "predict_case", "localise_case", "default_checkpoint"]

BUNDLE_ROOT = Path(bundle.__file__).resolve().parents[1]
"""The bundle's root folder (configs/, models/), found from the installed package."""


class CaseFailed(RuntimeError):
    """The case could not be predicted; the message is the one-line error of ``errors.csv``."""


@dataclass(frozen=True)
class CasePrediction:
    """One patient's result: ``record`` is the row of ``predictions.csv`` (numbers typed, empty cells None) updated
    with ``patients/<id>.json`` (interval settings, ``mc_samples``), ``report_png`` the patient report (None with
    ``reports`` off) and ``output_dir`` the inference run's folder."""

    record: dict[str, Any]
    report_png: Path | None
    output_dir: Path

    def summary(self) -> dict[str, Any]:
        """Per side: SBR, interval (``null`` when there is none), abnormal flag and threshold; plus the run's facts."""
        sides = {
            side: {
                "sbr": self.record[f"sbr_{side}"],
                "interval": _interval(self.record, side),
                "abnormal": bool(self.record[f"abnormal_{side}"]),
                "abnormal_below": ABNORMAL_SBR[side],
            }
            for side in SIDES
        }
        keys = ("id", "interval_kind", "nominal_coverage", "centroid_source", "mc_samples")
        return {**{k: self.record.get(k) for k in keys}, **sides, "research_use_only": True}


def _interval(record: Mapping[str, Any], side: str) -> list[float] | None:
    low, high = record.get(f"low_{side}"), record.get(f"high_{side}")
    return None if low in (None, "") or high in (None, "") else [float(low), float(high)]


def default_checkpoint(models: str | os.PathLike) -> Path:
    """``models`` itself when it is a file, else its ``model.ts`` if present, else its ``model.pt``."""
    models = Path(models)
    if models.is_file():
        return models
    return models / "model.ts" if (models / "model.ts").is_file() else models / "model.pt"


def predict_case(
    case: Mapping[str, Any],
    output_dir: str | os.PathLike,
    ckpt_path: str | os.PathLike | None = None,
    mc_samples: int = 100,
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    bundle_root: str | os.PathLike = BUNDLE_ROOT,
) -> CasePrediction:
    """Run the ``inference`` workflow on the one datalist ``case`` (``id``, ``image``, optional centroids; without
    them the localiser finds them) with its outputs in ``output_dir`` and return the prediction.

    Raises:
        CaseFailed: with the case's one-line error when it could not be predicted.
    """
    from monai.bundle import run

    root, out = Path(bundle_root), Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    datalist = out / "datalist.json"
    write_json(datalist, {"test": [dict(case)]})
    run(
        "inference", config_file=[str(root / "configs" / "inference.json"), *map(str, config_files)],
        meta_file=str(root / "configs" / "metadata.json"), logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root), datalist=str(datalist), dataset_dir=str(out), section="test", output_dir=str(out),
        ckpt_path=str(ckpt_path or default_checkpoint(root / "models")), mc_samples=mc_samples,
        **{"reports": True, **dict(overrides or {})},
    )  # fmt: skip
    with (out / "errors.csv").open() as f:
        errors = list(csv.DictReader(f))
    if errors:
        raise CaseFailed(errors[0]["error"])
    with (out / "predictions.csv").open() as f:
        (row,) = csv.DictReader(f)
    record: dict[str, Any] = {key: _typed(value) for key, value in row.items()}
    record["id"] = unescape_cell(row["id"])
    record_files = sorted((out / "patients").glob("*.json"))
    if record_files:
        record |= json.loads(record_files[0].read_text())
    report = record_files[0].with_suffix(".png") if record_files else None
    return CasePrediction(record, report if report and report.is_file() else None, out)


def _typed(cell: str) -> Any:
    """A ``predictions.csv`` cell as a number where it is one, None where it is empty."""
    if cell == "":
        return None
    try:
        number = float(cell)
    except ValueError:
        return cell
    return int(number) if number.is_integer() and "." not in cell else number


def localise_case(
    case: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    bundle_root: str | os.PathLike = BUNDLE_ROOT,
) -> dict[str, Any]:
    """``case`` with world centroids from the localiser exactly as the ``inference`` workflow configures it
    (``auto_centroids`` of inference.json with ``overrides``: ``localiser_path``, ``plausibility``, mirror averaging).

    Raises:
        CaseFailed: with the one-line reason when the localiser's result is refused.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle_root) / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_root), **dict(overrides or {})})
    try:
        return parser.get_parsed_content("auto_centroids")(dict(case))
    except ValueError as err:
        raise CaseFailed(str(err)) from None
