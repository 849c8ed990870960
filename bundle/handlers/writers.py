"""Ignite handlers that turn the MC samples of an inference run (SBR units, after the postprocessing) into the
workflow's files: ``predictions.csv`` / ``errors.csv`` / per-patient reports, and ``calibration.json``.

Written by hand: the file formats are the bundle's own (README, "Commands"); the equations they apply live in
:mod:`bundle.method.uncertainty`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

import bundle
from bundle.constants import ABNORMAL_SBR, DEFAULT_SBR_MAX
from bundle.evaluation.predictions import PREDICTION_COLUMNS, RUN_RECORD
from bundle.evaluation.report import patient_report
from bundle.io import inside, safe_file_stem, staged_outputs, write_csv, write_json
from bundle.method.uncertainty import (
    GAUSSIAN_95,
    IntervalSettings,
    MCSummary,
    conformal_scale,
    interval_scores,
    select_gamma,
    summarise_mc,
)

__all__ = ["load_interval_settings", "MCCollector", "PredictionWriter", "CalibrationWriter"]

logger = logging.getLogger(__name__)


def load_interval_settings(
    calibration_path: str | os.PathLike | None, mode: str = "symmetric", gamma_r: float = 0.5, gamma_l: float = 0.5
) -> IntervalSettings:
    """Interval settings for inference.

    ``mode="symmetric"`` (the paper's symmetric MC, eq. 10) or ``"mc"`` (plain MC dropout, gamma = 0). A
    ``calibration.json`` (from the ``calibrate`` workflow) supplies gamma and the conformal scale for its mode;
    without one, the given gammas and a Gaussian +-1.96 SD are used and the intervals are labelled uncalibrated.
    A malformed file is a one-line ``ValueError`` naming it and the problem.
    """
    if mode not in ("symmetric", "mc"):
        raise ValueError(f"interval_mode must be 'symmetric' or 'mc', got {mode!r}")
    if calibration_path and Path(calibration_path).is_file():
        return _read_calibration(Path(calibration_path), mode)
    if mode == "mc":
        gamma_r = gamma_l = 0.0
    return IntervalSettings(
        gamma_r, gamma_l, GAUSSIAN_95, GAUSSIAN_95, f"{mode} MC dropout, uncalibrated (+-1.96 SD, no calibration.json)"
    )


def _read_calibration(path: Path, mode: str) -> IntervalSettings:
    """The settings of one mode of a ``calibration.json``; one-line ``ValueError`` naming the file otherwise."""
    try:
        calibration = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = f"not valid JSON ({type(err).__name__})"
        raise ValueError(f"calibration file {path}: {problem}; run calibrate again") from None
    try:
        entry = calibration["modes"][mode]
        coverage = float(calibration["coverage"])
        values = [float(entry[key]) for key in ("gamma_r", "gamma_l", "scale_r", "scale_l")]
    except (KeyError, TypeError, ValueError) as err:
        problem = f"no {err}" if isinstance(err, KeyError) else f"a value is not a number ({err})"
        where = f"calibration file {path}"
        raise ValueError(f"{where}: {problem} for interval mode {mode!r}; run calibrate again") from None
    if not all(math.isfinite(v) and v >= 0 for v in values) or not 0 < coverage < 1:
        raise ValueError(f"calibration file {path}: gamma, scale or coverage out of range; run calibrate again")
    return IntervalSettings(
        *values, f"{mode} MC dropout, calibrated to {coverage:.0%} coverage ({path})", "calibrated", coverage
    )


class MCCollector:
    """Ignite handler collecting ids, MC samples ([n, 2], SBR units) and truths of every case of a run.

    Reads the engine output after the postprocessing (``pred`` [B, n, 2] and ``label`` [B, 2] in SBR units, the
    label NaN for unlabelled cases); subclasses write the files in :meth:`completed` and leave in ``summary`` the
    line that says what they wrote and where (the workflow's last line, see ``run_evaluator``).
    """

    def __init__(self) -> None:
        self.keep_images = False
        self.summary = ""
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self) -> None:
        """Forget the cases of a previous run."""
        self.ids: list[str] = []
        self.samples: list[np.ndarray] = []
        self.truths: list[np.ndarray | None] = []
        self.images: list[np.ndarray] = []
        self.sources: list[str] = []

    def collect(self, engine: Engine) -> None:
        """Keep this batch's cases as numpy arrays that own their memory: a view of a batch tensor would keep the
        tensor's storage alive amid the next batches' freed blocks, and the process heap would grow by megabytes
        per batch of MC samples (docs/performance.md, peak RSS)."""
        batch, output = engine.state.batch, engine.state.output
        pred = output["pred"].detach().double().cpu().numpy()  # [B, n, 2]
        labels = output.get("label")
        sources = batch.get("centroid_source") or [""] * len(batch["id"])
        for i, case_id in enumerate(batch["id"]):
            self.ids.append(str(case_id))
            self.sources.append(str(sources[i]))
            self.samples.append(pred[i].copy())
            truth = None if labels is None else labels[i].detach().double().cpu().numpy().copy()
            self.truths.append(None if truth is None or not np.isfinite(truth).all() else truth)
            if self.keep_images:
                self.images.append(batch["image"][i].float().cpu().numpy().copy())

    def sample_array(self) -> np.ndarray:
        """All samples as [n_samples, n_patients, 2] (SBR units)."""
        return np.stack(self.samples, axis=1) if self.samples else np.zeros((1, 0, 2))

    def completed(self, engine: Engine) -> None:
        raise NotImplementedError


class PredictionWriter(MCCollector):
    """Write ``predictions.csv``, ``errors.csv`` and one JSON (and optionally one PNG report) per patient.

    Columns as in the README ("Commands"), SBR units; intervals ``mean +- scale * sigma^sym`` with the settings of
    :func:`load_interval_settings`. With a single (deterministic) sample, sigma and interval cells stay empty.
    ``run_inputs`` (the hashes of checkpoint, calibration and datalist and the settings that decide the numbers,
    ``run_inputs`` in ``configs/inference.json``) go to ``run.json``, by which a later ``evaluating`` run knows these
    predictions are its own. All files of a run replace the previous ones together (:func:`bundle.io.staged_outputs`).

    After a run the writer holds what it wrote, typed (numbers as numbers, empty cells None), not spreadsheet-escaped:
    ``rows`` (``predictions.csv``), ``records`` (each ``patients/<id>.json``: the row plus ``true_sbr_*``,
    ``mc_samples`` and ``intervals``), ``report_files`` (each record's ``patients/<id>.png``, None with ``reports``
    off) and ``error_rows`` (``errors.csv``), so that callers in the same process need not read the files back.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        intervals: IntervalSettings,
        errors: Sequence[Mapping[str, str]] = (),
        reports: bool = False,
        run_inputs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.intervals = intervals
        self.errors = errors
        self.keep_images = reports
        self.run_inputs = dict(run_inputs or {})

    def reset(self) -> None:
        """Forget the cases and the outputs of a previous run."""
        super().reset()
        self.rows: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.report_files: list[Path | None] = []
        self.error_rows: list[dict[str, str]] = []

    def completed(self, engine: Engine) -> None:
        samples = self.sample_array()
        deterministic = samples.shape[0] == 1
        s = self.intervals
        if not deterministic and s.kind != "calibrated":
            logger.warning(
                "UNCALIBRATED intervals: %s. They have no coverage guarantee (about half of the cases on the demo "
                "model); run the calibrate workflow first. predictions.csv and the reports say 'uncalibrated'.",
                s.description,
            )
        summary = summarise_mc(samples, s.gamma_r, s.gamma_l)
        errors, stems, cases = list(self.errors), {}, []
        for i, case_id in enumerate(self.ids):
            try:
                cases.append((i, _file_stem(case_id, stems)))
            except ValueError as err:
                logger.error("skipping case: %s", err)
                errors.append({"id": case_id, "error": str(err)})
        self.rows = [self._row(i, summary, deterministic) for i, _ in cases]
        n_samples = int(samples.shape[0])
        self.records = [self._record(i, row, n_samples) for (i, _), row in zip(cases, self.rows, strict=True)]
        self.error_rows = errors
        self.report_files = [self.output_dir / "patients" / f"{stem}.png" if self.keep_images else None
                             for _, stem in cases]  # fmt: skip
        with staged_outputs(self.output_dir) as staging:
            for (i, stem), record in zip(cases, self.records, strict=True):
                write_json(inside(staging, "patients", f"{stem}.json"), record)
                if self.keep_images:
                    patient_report(self.images[i], record, inside(staging, "patients", f"{stem}.png"))
            write_csv(staging / "predictions.csv", PREDICTION_COLUMNS, self.rows)
            write_csv(staging / "errors.csv", ("id", "error"), errors)
            write_json(staging / RUN_RECORD, {"bundle_version": bundle.__version__, "inputs": self.run_inputs,
                                              "n_predictions": len(self.rows), "n_errors": len(errors)})  # fmt: skip
        kind = "deterministic, no intervals" if deterministic else s.description
        self.summary = (
            f"wrote {len(self.rows)} predictions ({kind}) and {len(errors)} errors -> "
            f"{self.output_dir / 'predictions.csv'}, errors.csv{', patients/' if cases else ''}"
        )

    def _record(self, i: int, row: Mapping[str, Any], n_samples: int) -> dict[str, Any]:
        """Case ``i``'s ``patients/<id>.json``: its row, the measured SBRs (None if unknown), the interval settings."""
        truth, deterministic = self.truths[i], n_samples == 1
        return {**row, "true_sbr_right": None if truth is None else float(truth[0]),
                "true_sbr_left": None if truth is None else float(truth[1]),
                "mc_samples": 0 if deterministic else n_samples,
                "intervals": None if deterministic else self.intervals.as_dict()}  # fmt: skip

    def _row(self, i: int, summary: MCSummary, deterministic: bool) -> dict[str, Any]:
        right, left = float(summary.mean_r[i]), float(summary.mean_l[i])
        row: dict[str, Any] = {
            "id": self.ids[i], "sbr_right": round(right, 4), "sbr_left": round(left, 4),
            "abnormal_right": int(right < ABNORMAL_SBR["right"]), "abnormal_left": int(left < ABNORMAL_SBR["left"]),
            "interval_kind": "none" if deterministic else self.intervals.kind,
            "nominal_coverage": None if deterministic else self.intervals.coverage,
            "centroid_source": self.sources[i],
        }  # fmt: skip
        if deterministic:
            return row
        half_r, half_l = (float(h[i]) for h in self.intervals.half_widths(summary))
        row.update(
            sigma_right=round(float(summary.sigma_r[i]), 5), sigma_left=round(float(summary.sigma_l[i]), 5),
            sigma_sym=round(float(summary.sigma_sym[i]), 5),
            low_right=round(right - half_r, 4), high_right=round(right + half_r, 4),
            low_left=round(left - half_l, 4), high_left=round(left + half_l, 4),
        )  # fmt: skip
        return row


def _file_stem(case_id: str, used: dict[str, str]) -> str:
    """The case's output file stem (:func:`bundle.io.safe_file_stem`), unique among ``used`` regardless of letter
    case (``used`` maps lower-cased stems to ids); a one-line ``ValueError`` for a clash."""
    stem = safe_file_stem(case_id)
    if stem.lower() in used:
        raise ValueError(
            f"{case_id}: id: its output file name {stem!r} is already used by case {used[stem.lower()]!r} "
            "(ids differ only in characters that file names cannot hold)"
        )
    used[stem.lower()] = case_id
    return stem


class CalibrationWriter(MCCollector):
    """Choose gamma_r, gamma_l and the conformal scale on validation MC samples; write ``calibration.json``.

    For each side, gamma is chosen by Algorithm 1's rule (:func:`~bundle.method.uncertainty.select_gamma`: the
    largest sharpness-CP AUC of sigma + gamma sigma_sym over ``gamma_grid``); then a split-conformal scale k makes
    mean +- k sigma^sym reach ``coverage`` with the finite-sample guarantee (beyond the paper). Done for both
    interval modes: ``mc`` (gamma = 0) and ``symmetric``.

    Args:
        output_path: the ``calibration.json`` to write (atomically).
        coverage: nominal coverage of the conformal intervals.
        gamma_grid: candidate gammas in [0, 1].
        width_range: normalisation of the interval widths in the sharpness (§4.4): the SBR range, ``sbr_max``.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        coverage: float = 0.95,
        gamma_grid: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2)),
        width_range: float = DEFAULT_SBR_MAX,
    ) -> None:
        super().__init__()
        self.output_path = Path(output_path)
        self.coverage = float(coverage)
        self.gamma_grid = [float(g) for g in gamma_grid]
        self.width_range = float(width_range)
        self.result: dict[str, Any] = {}

    def _side(
        self, truth: np.ndarray, mean: np.ndarray, sigma: np.ndarray, sigma_sym: np.ndarray, grid: Sequence[float]
    ):
        """gamma (Algorithm 1), conformal scale and validation figures of one side."""
        gamma, auc = select_gamma(truth, mean, sigma, sigma_sym, grid, self.width_range)
        half = sigma + gamma * sigma_sym  # eq. 10 of this side (Algorithm 1 pairing)
        scale = conformal_scale(truth, mean, half, self.coverage)
        covered = float(np.mean(interval_scores(truth, mean, half) <= scale))  # scale * half may round below |error|
        return {"gamma": gamma, "scale": scale, "auc": auc, "validation_coverage": covered,
                "mean_width_sbr": float(np.mean(2 * scale * half))}  # fmt: skip

    def completed(self, engine: Engine) -> None:
        if any(t is None for t in self.truths) or not self.ids:
            raise ValueError("calibration needs SBR values for every validation case")
        samples = self.sample_array()
        if samples.shape[0] < 2:
            raise ValueError("calibration needs mc_samples >= 2")
        truth = np.stack(self.truths)  # [patients, 2], SBR
        base = summarise_mc(samples)
        modes: dict[str, dict[str, float]] = {}
        for mode, grid in (("mc", [0.0]), ("symmetric", self.gamma_grid)):
            entry: dict[str, float] = {}
            for side, col, sigma, mean in (("r", 0, base.sigma_r, base.mean_r), ("l", 1, base.sigma_l, base.mean_l)):
                result = self._side(truth[:, col], mean, sigma, base.sigma_sym, grid)
                entry.update({f"{key}_{side}": value for key, value in result.items()})
            modes[mode] = entry
        if not all(math.isfinite(m[f"scale_{s}"]) for m in modes.values() for s in "rl"):
            raise ValueError(
                f"{len(self.ids)} validation cases are too few for a {self.coverage:.0%} conformal guarantee"
            )
        self.result = {
            "gamma_r": modes["symmetric"]["gamma_r"], "gamma_l": modes["symmetric"]["gamma_l"],
            "scale": {"right": modes["symmetric"]["scale_r"], "left": modes["symmetric"]["scale_l"]},
            "coverage": self.coverage, "n_cases": len(self.ids), "mc_samples": int(samples.shape[0]),
            "modes": modes,
        }  # fmt: skip
        write_json(self.output_path, self.result)
        sym = modes["symmetric"]
        self.summary = (
            f"calibration: gamma_r={sym['gamma_r']:.2f} gamma_l={sym['gamma_l']:.2f}, conformal scale right "
            f"{sym['scale_r']:.3f} left {sym['scale_l']:.3f} for {self.coverage:.0%} coverage (validation coverage "
            f"{sym['validation_coverage_r']:.3f} / {sym['validation_coverage_l']:.3f}) -> {self.output_path}"
        )
