"""The ``evaluating`` workflow: ``metrics.json`` and the figures from ``predictions.csv`` and the datalist truths."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bundle.constants import DEFAULT_SBR_MAX, SIDES
from bundle.evaluation import plots
from bundle.evaluation.predictions import RUN_RECORD, EvaluationData, load_truths, pair_predictions, read_predictions
from bundle.evaluation.tables import compute_metrics, interval_units, sharpness_cp_points
from bundle.io import staged_outputs, write_json
from bundle.method.uncertainty import IntervalSettings

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["FIGURES", "reuse_predictions", "Evaluation"]

FIGURES = ("right_left_sbr", "pred_vs_measured", "bland_altman", "sharpness_cp", "residual_histogram")
"""PNG files written next to ``metrics.json`` (``{name}.png``)."""

logger = logging.getLogger(__name__)


def reuse_predictions(
    predictions_csv: str | os.PathLike, run_inputs: Mapping[str, Any], candidates: Sequence[str | os.PathLike]
) -> bool:
    """Whether earlier predictions can be evaluated instead of running inference again.

    The first folder of ``candidates`` whose ``run.json`` records the same ``run_inputs`` (hashes of checkpoint,
    calibration and datalist, and the settings that decide the numbers) and that holds its ``predictions.csv`` is
    used: its ``predictions.csv``, ``errors.csv`` and ``run.json`` are copied together beside ``predictions_csv``
    (staged, so never half), unless they are already there. Otherwise logs why inference runs and returns False. The
    image files are not hashed: a cohort whose images changed under an unchanged datalist needs
    ``--run_inference true``.
    """
    target = Path(predictions_csv).parent
    wanted = json.loads(json.dumps(dict(run_inputs)))  # the form it takes in run.json
    reasons = []
    for folder in map(Path, candidates):
        record_path = folder / RUN_RECORD
        if not (folder / "predictions.csv").is_file() or not record_path.is_file():
            continue
        try:
            recorded = json.loads(record_path.read_text()).get("inputs", {})
        except (OSError, ValueError, AttributeError):
            recorded = {}
        if recorded != wanted:
            changed = sorted(k for k in set(wanted) | set(recorded) if recorded.get(k) != wanted.get(k))
            reasons.append(f"{folder} differs in {', '.join(changed)}")
            continue
        if folder.resolve() != target.resolve():
            with staged_outputs(target) as staging:
                for name in ("predictions.csv", "errors.csv", RUN_RECORD):
                    if (folder / name).is_file():
                        shutil.copyfile(folder / name, staging / name)
        logger.info("reusing the predictions of %s (same checkpoint, calibration, datalist and settings)", folder)
        return True
    logger.info("running inference first: %s", "; ".join(reasons) or "no earlier predictions of these inputs")
    return False


def _all_truths(datalist: str | os.PathLike) -> dict[str, np.ndarray]:
    """True (right, left) SBR of every labelled case of every section, for the right-left scatter (Fig. 2)."""
    content = json.loads(Path(datalist).read_text())
    out = {}
    for section, cases in content.items():
        pairs = [(c["sbr_right"], c["sbr_left"]) for c in cases if isinstance(c, dict)
                 and c.get("sbr_right") is not None and c.get("sbr_left") is not None]  # fmt: skip
        if pairs:
            out[section] = np.array(pairs, dtype=np.float64)
    return out


class Evaluation:
    """Evaluate ``predictions_csv`` against the ``section`` truths; write ``metrics.json`` and the figures.

    Args:
        predictions_csv: ``predictions.csv`` of the inference workflow.
        datalist: datalist JSON holding the truths (``sbr_right``/``sbr_left``).
        section: datalist section that was predicted (``test`` by default in ``configs/evaluate.json``).
        output_dir: where ``metrics.json`` and the PNGs go (written atomically).
        dataset_dir: base of the datalist's relative paths (only used to read the section).
        symmetric_settings: interval settings whose gammas define the symmetric MC intervals of Table 5
            (``bundle.handlers.writers.load_interval_settings(..., "symmetric", ...)``: calibration.json or the
            defaults).
        sbr_max: normalisation of the interval widths.
        confidence_level: level of the agreement CIs.
        figures: write the PNG figures (and log them to TensorBoard).
        summary_writer: optional TensorBoard writer for the figures and the Table 3 scalars.
    """

    def __init__(
        self,
        predictions_csv: str | os.PathLike,
        datalist: str | os.PathLike,
        section: str,
        output_dir: str | os.PathLike,
        dataset_dir: str | os.PathLike | None = None,
        symmetric_settings: IntervalSettings | None = None,
        sbr_max: float = DEFAULT_SBR_MAX,
        confidence_level: float = 0.95,
        figures: bool = True,
        summary_writer: SummaryWriter | None = None,
    ) -> None:
        self.predictions_csv = Path(predictions_csv)
        self.datalist, self.section, self.dataset_dir = datalist, section, dataset_dir
        self.output_dir = Path(output_dir)
        self.gamma_r = symmetric_settings.gamma_r if symmetric_settings is not None else 0.5
        self.gamma_l = symmetric_settings.gamma_l if symmetric_settings is not None else 0.5
        self.gamma_source = symmetric_settings.description if symmetric_settings is not None else "default 0.5"
        self.sbr_max = float(sbr_max)
        self.confidence_level = float(confidence_level)
        self.figures = bool(figures)
        self.summary_writer = summary_writer

    def run(self) -> dict[str, Any]:
        truths = load_truths(self.datalist, self.section, self.dataset_dir)
        data = pair_predictions(read_predictions(self.predictions_csv), truths)
        if data.missing:
            logger.warning("%d %s cases have no prediction (see errors.csv): %s", len(data.missing), self.section,
                           ", ".join(data.missing[:10]))  # fmt: skip
        metrics = compute_metrics(data, self.gamma_r, self.gamma_l, self.sbr_max, self.confidence_level)
        metrics["settings"].update(section=self.section, predictions=str(self.predictions_csv),
                                   gamma_source=self.gamma_source)  # fmt: skip
        write_json(self.output_dir / "metrics.json", metrics)
        if self.figures:
            self._figures(data, metrics)
        if self.summary_writer is not None:
            for side in (*SIDES, "avg"):
                for key in ("rmse", "mae", "r"):
                    value = metrics["table3"][side][key]
                    if value is not None:
                        self.summary_writer.add_scalar(f"evaluation/{key}_{side}", value, 0)
            self.summary_writer.flush()
        t3 = metrics["table3"]["avg"]
        logger.info("evaluated %d %s cases: MAE %.4f RMSE %.4f R %.4f (avg of sides) -> %s", data.n, self.section,
                    t3["mae"], t3["rmse"], t3["r"] if t3["r"] is not None else math.nan,
                    self.output_dir / "metrics.json")  # fmt: skip
        return metrics

    def _figures(self, data: EvaluationData, metrics: Mapping[str, Any]) -> None:
        label = f"{self.section} set, n = {data.n}"
        figures = {
            "right_left_sbr": plots.right_left_scatter(_all_truths(self.datalist)),
            "pred_vs_measured": plots.predicted_vs_measured(data.truth, data.pred, data.low, data.high, label),
            "bland_altman": plots.bland_altman(data.truth, data.pred, label),
            "residual_histogram": plots.residual_histogram(data.truth, data.pred, label),
        }
        units = interval_units(data, self.gamma_r, self.gamma_l)
        if units:
            curves = {mode: [sharpness_cp_points(data.truth[:, i], data.pred[:, i], unit[:, i], self.sbr_max)
                             for i in range(len(SIDES))] for mode, unit in units.items()}  # fmt: skip
            notes = {"symmetric": f"γ_r = {self.gamma_r:g}, γ_l = {self.gamma_l:g}"}
            figures["sharpness_cp"] = plots.sharpness_cp_figure(curves, label, notes)
        for name, figure in figures.items():
            plots.save_png(figure, self.output_dir / f"{name}.png")
            if self.summary_writer is not None:
                self.summary_writer.add_figure(f"evaluation/{name}", figure, close=False)
