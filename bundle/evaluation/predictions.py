"""Predictions paired with the datalist's truths: reading ``predictions.csv``, the truths of a section, and merging
the two single-side models' predictions of the ablation. Everything in SBR units."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bundle.constants import ABNORMAL_SBR, SIDES
from bundle.data.datalist import load_cases
from bundle.io import unescape_cell, write_csv

__all__ = [
    "RUN_RECORD",
    "PREDICTION_COLUMNS",
    "EvaluationData",
    "read_predictions",
    "load_truths",
    "pair_predictions",
    "merge_side_predictions",
]

PREDICTION_COLUMNS = (
    "id", "sbr_right", "sbr_left", "sigma_right", "sigma_left", "sigma_sym",
    "low_right", "high_right", "low_left", "high_left", "abnormal_right", "abnormal_left",
    "interval_kind", "nominal_coverage", "centroid_source",
)  # fmt: skip
"""Columns of ``predictions.csv`` (SBR units). ``interval_kind``: ``calibrated``, ``uncalibrated`` or ``none``
(deterministic); ``nominal_coverage``: the calibrated coverage (empty otherwise); ``centroid_source``: ``annotated``
(the datalist's centroids), ``localiser`` (found automatically) or ``pre-cropped`` (patch files, ``.mat``)."""
RUN_RECORD = "run.json"
"""Written beside ``predictions.csv``: the bundle version, the run's inputs (hashes and settings) and its counts."""
TEXT_COLUMNS = ("id", "interval_kind", "centroid_source")
"""Columns of ``predictions.csv`` that hold text; the others are numbers (SBR units) or empty."""


@dataclass(frozen=True)
class EvaluationData:
    """Predictions paired with truths, one row per patient, columns (right, left), SBR units.

    ``sigma``, ``sigma_sym``, ``low`` and ``high`` are NaN where ``predictions.csv`` left them empty
    (deterministic inference, or the separate single-side models of the ablation, which have no sigma_sym).
    """

    ids: list[str]
    truth: np.ndarray
    pred: np.ndarray
    sigma: np.ndarray
    sigma_sym: np.ndarray
    low: np.ndarray
    high: np.ndarray
    missing: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def abs_error(self) -> np.ndarray:
        """|prediction - truth| per patient and side [N, 2]."""
        return np.abs(self.pred - self.truth)

    def abnormal(self, values: np.ndarray) -> np.ndarray:
        """1 where ``values`` [N, 2] are below the Table 4 thresholds (abnormal = positive)."""
        thresholds = np.array([ABNORMAL_SBR[s] for s in SIDES])
        return (values < thresholds).astype(int)


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else math.nan


def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``predictions.csv`` as ``{id: {column: value}}``; empty cells become NaN."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "sbr_right" not in rows[0]:
        raise ValueError(f"{path}: not a predictions.csv (columns {list(rows[0])})")
    return {unescape_cell(row["id"]): {k: _float(v) for k, v in row.items() if k not in TEXT_COLUMNS} for row in rows}


def load_truths(
    datalist: str | os.PathLike, section: str, dataset_dir: str | os.PathLike | None = None
) -> dict[str, tuple[float, float]]:
    """``{id: (sbr_right, sbr_left)}`` of the cases of ``section`` that give both SBRs, in datalist order."""
    truths = {}
    for case in load_cases(datalist, section, dataset_dir):
        if case.get("sbr_right") is not None and case.get("sbr_left") is not None:
            truths[str(case["id"])] = (float(case["sbr_right"]), float(case["sbr_left"]))
    return truths


def pair_predictions(
    predictions: Mapping[str, Mapping[str, float]], truths: Mapping[str, tuple[float, float]]
) -> EvaluationData:
    """Patients with both a prediction and a truth, in the truths' (datalist) order."""
    ids = [i for i in truths if i in predictions]
    if not ids:
        raise ValueError("no case has both a prediction and a true SBR (wrong section or predictions.csv?)")

    def column(*names: str) -> np.ndarray:
        return np.array([[predictions[i][n] for n in names] for i in ids], dtype=np.float64)

    return EvaluationData(
        ids=ids,
        truth=np.array([truths[i] for i in ids], dtype=np.float64),
        pred=column("sbr_right", "sbr_left"),
        sigma=column("sigma_right", "sigma_left"),
        sigma_sym=column("sigma_sym")[:, 0],
        low=column("low_right", "low_left"),
        high=column("high_right", "high_left"),
        missing=[i for i in truths if i not in predictions],
        unlabelled=[i for i in predictions if i not in truths],
    )


def _read_rows(path: str | os.PathLike) -> dict[str, Mapping[str, str]]:
    with open(path, newline="") as handle:
        return {unescape_cell(row["id"]): row for row in csv.DictReader(handle)}


def merge_side_predictions(
    right_csv: str | os.PathLike, left_csv: str | os.PathLike, output_csv: str | os.PathLike
) -> int:
    """``predictions.csv`` of the pair of single-side models: right columns from ``right_csv``, left columns from
    ``left_csv`` (cases present in both, in ``right_csv`` order). ``sigma_sym`` stays empty: the symmetric hint
    (eq. 9) needs one paired model. Returns the number of rows written."""
    right, left = _read_rows(right_csv), _read_rows(left_csv)
    rows = []
    for case_id, r in right.items():
        if case_id not in left:
            continue
        row = {c: r[c] for c in PREDICTION_COLUMNS if c.endswith("_right")}
        row.update({c: left[case_id][c] for c in PREDICTION_COLUMNS if c.endswith("_left")})
        kind = {c: r.get(c) for c in ("interval_kind", "nominal_coverage")}
        rows.append({"id": case_id, **row, **kind, "sigma_sym": None})
    write_csv(output_csv, PREDICTION_COLUMNS, rows)
    return len(rows)
