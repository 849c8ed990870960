"""Symmetric MC-dropout inference and calibration: model loading, robust case preparation, the MC inferer and
the handlers that turn MC samples into ``predictions.csv`` / ``calibration.json``."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.inferers import Inferer
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from bundle.io import write_csv, write_json
from bundle.metrics import ABNORMAL_SBR
from bundle.uncertainty import MCSummary, conformal_scale, sharpness_cp_auc, summarise_mc

__all__ = [
    "PREDICTION_COLUMNS",
    "load_network",
    "PreparedCases",
    "SymmetricMCInferer",
    "run_evaluator",
    "IntervalSettings",
    "load_interval_settings",
    "PredictionWriter",
    "CalibrationWriter",
]

PREDICTION_COLUMNS = (
    "id", "sbr_right", "sbr_left", "sigma_right", "sigma_left", "sigma_sym",
    "low_right", "high_right", "low_left", "high_left", "abnormal_right", "abnormal_left",
)  # fmt: skip
GAUSSIAN_95 = 1.959963984540054
"""Interval half-width in SDs when no calibration exists (a Gaussian 95 % interval, not a calibrated one)."""

logger = logging.getLogger(__name__)


def load_network(network: nn.Module, ckpt_path: str | os.PathLike, device: torch.device | str) -> nn.Module:
    """The weights of ``ckpt_path`` on ``device``, in eval mode.

    ``*.ts`` / ``*.pt`` exported by ``ckpt_export`` (TorchScript) is loaded with ``torch.jit.load`` and replaces
    ``network``; anything else is a state dict loaded with ``torch.load(weights_only=True)`` into ``network``
    (strict; a mismatch names the offending keys).
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train first, or set --ckpt_path)")
    if path.suffix == ".ts":
        return torch.jit.load(str(path), map_location=device).eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusal, corrupt file
        raise ValueError(f"checkpoint {path}: cannot be loaded safely as weights ({type(err).__name__})") from err
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        details = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if keys
        )
        from bundle.checkpoints import read_model_info

        info = read_model_info(state)
        hint = f"it was trained as {info['network']}" if info else "use the network_def of its training run"
        raise ValueError(f"checkpoint {path} does not fit network_def ({details}); {hint}")
    network.load_state_dict(state)
    return network.to(device).eval()


class PreparedCases(Dataset):
    """Cases run through the deterministic ``transform`` up front; a failing case is recorded, not fatal.

    ``errors`` lists ``{"id": ..., "error": one-line message}`` for the cases that failed, so a batch goes on
    with the other cases and the failures end up in ``errors.csv``.
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], transform: Callable, progress: bool = True) -> None:
        from bundle.transforms import error_message

        self.items: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        for case in tqdm(data, desc="Preparing cases", disable=not progress):
            try:
                self.items.append(transform(dict(case)))
            except Exception as err:
                message = error_message(err)
                case_id = str(case.get("id", "?"))
                if not message.startswith(f"{case_id}:"):
                    message = f"{case_id}: {message}"
                logger.error("skipping case: %s", message)
                self.errors.append({"id": case_id, "error": message})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class SymmetricMCInferer(Inferer):
    """Monte-Carlo-dropout inferer for the paired model: ``[B, 2, *patch]`` -> samples ``[B, max(n, 1), 2]``.

    With ``n_samples > 0`` it calls the network's ``mc_forward`` (dropout on, every other layer in eval mode;
    head-only dropout computes the convolutional features once). With ``n_samples = 0`` it returns the
    deterministic prediction (dropout off) as a single sample.
    """

    def __init__(self, n_samples: int = 100, chunk_size: int = 16) -> None:
        super().__init__()
        if n_samples < 0:
            raise ValueError(f"mc_samples must be >= 0, got {n_samples}")
        self.n_samples = int(n_samples)
        self.chunk_size = int(chunk_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if self.n_samples == 0:
            return network(inputs).unsqueeze(1)
        return network.mc_forward(inputs, self.n_samples, self.chunk_size)


def run_evaluator(evaluator: Engine, handlers: Sequence[Any] = ()) -> None:
    """Run ``evaluator``; if no case could be prepared (so the engine does not even start), still let the
    output handlers write their files (an empty ``predictions.csv`` and the ``errors.csv`` saying why)."""
    evaluator.run()
    if not evaluator.state.epoch_length:
        for handler in handlers:
            if isinstance(handler, MCCollector):
                handler._reset(evaluator)
                handler.completed(evaluator)


class IntervalSettings:
    """How intervals are formed: ``half_width = scale * (sigma + gamma * sigma_sym)`` per side."""

    def __init__(self, gamma_r: float, gamma_l: float, scale_r: float, scale_l: float, description: str) -> None:
        self.gamma_r, self.gamma_l = float(gamma_r), float(gamma_l)
        self.scale_r, self.scale_l = float(scale_r), float(scale_l)
        self.description = description

    def as_dict(self) -> dict[str, Any]:
        return {
            "gamma_r": self.gamma_r, "gamma_l": self.gamma_l, "scale_r": self.scale_r, "scale_l": self.scale_l,
            "description": self.description,
        }  # fmt: skip


def load_interval_settings(
    calibration_path: str | os.PathLike | None, mode: str = "symmetric", gamma_r: float = 0.5, gamma_l: float = 0.5
) -> IntervalSettings:
    """Interval settings for inference.

    ``mode="symmetric"`` (the paper's symmetric MC, eq. 10) or ``"mc"`` (plain MC dropout, gamma = 0). A
    ``calibration.json`` (from ``configs/calibrate.json``) supplies gamma and the conformal scale for its mode;
    without one, the given gammas and a Gaussian +-1.96 SD are used and the intervals are labelled uncalibrated.
    """
    if mode not in ("symmetric", "mc"):
        raise ValueError(f"interval_mode must be 'symmetric' or 'mc', got {mode!r}")
    if calibration_path and Path(calibration_path).is_file():
        calibration = json.loads(Path(calibration_path).read_text())
        entry = calibration["modes"][mode]
        coverage = calibration["coverage"]
        return IntervalSettings(
            entry["gamma_r"], entry["gamma_l"], entry["scale_r"], entry["scale_l"],
            f"{mode} MC dropout, calibrated to {coverage:.0%} coverage ({calibration_path})",
        )  # fmt: skip
    if mode == "mc":
        gamma_r = gamma_l = 0.0
    return IntervalSettings(
        gamma_r, gamma_l, GAUSSIAN_95, GAUSSIAN_95, f"{mode} MC dropout, uncalibrated (+-1.96 SD, no calibration.json)"
    )


class MCCollector:
    """Ignite handler collecting ids, MC samples ([n, 2] normalised) and truths of every case of a run."""

    def __init__(self, sbr_max: float = 6.84) -> None:
        self.sbr_max = float(sbr_max)
        self.ids: list[str] = []
        self.samples: list[np.ndarray] = []
        self.truths: list[np.ndarray | None] = []
        self.images: list[np.ndarray] = []
        self.keep_images = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _reset(self, engine: Engine) -> None:
        self.ids, self.samples, self.truths, self.images = [], [], [], []

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        pred = output["pred"].detach().float().cpu().numpy()  # [B, n, 2]
        labels = batch.get("label")
        for i, case_id in enumerate(batch["id"]):
            self.ids.append(str(case_id))
            self.samples.append(pred[i])
            truth = None if labels is None else labels[i].float().cpu().numpy()
            self.truths.append(None if truth is None or not np.isfinite(truth).all() else truth)
            if self.keep_images:
                self.images.append(batch["image"][i].float().cpu().numpy())

    def sample_array(self) -> np.ndarray:
        """All samples as [n_samples, n_patients, 2] (normalised units)."""
        return np.stack(self.samples, axis=1) if self.samples else np.zeros((1, 0, 2))

    def completed(self, engine: Engine) -> None:
        raise NotImplementedError


class PredictionWriter(MCCollector):
    """Write ``predictions.csv``, ``errors.csv`` and one JSON (and optionally one PNG report) per patient.

    Columns as in DESIGN.md, SBR units; intervals ``mean +- scale * sigma^sym`` with the settings of
    :func:`load_interval_settings`. With a single (deterministic) sample, sigma and interval cells stay empty.
    All files are written atomically.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        intervals: IntervalSettings,
        errors: Sequence[Mapping[str, str]] = (),
        sbr_max: float = 6.84,
        reports: bool = False,
    ) -> None:
        super().__init__(sbr_max)
        self.output_dir = Path(output_dir)
        self.intervals = intervals
        self.errors = errors
        self.keep_images = reports
        self.rows: list[dict[str, Any]] = []

    def completed(self, engine: Engine) -> None:
        samples = self.sample_array()
        deterministic = samples.shape[0] == 1
        s = self.intervals
        summary = summarise_mc(samples, s.gamma_r, s.gamma_l).scaled(self.sbr_max)
        self.rows = [self._row(i, summary, deterministic) for i in range(len(self.ids))]
        patients = self.output_dir / "patients"
        for i, row in enumerate(self.rows):
            truth = self.truths[i]
            record = {
                **row,
                "true_sbr_right": None if truth is None else float(truth[0] * self.sbr_max),
                "true_sbr_left": None if truth is None else float(truth[1] * self.sbr_max),
                "mc_samples": 0 if deterministic else int(samples.shape[0]),
                "intervals": None if deterministic else s.as_dict(),
            }
            write_json(patients / f"{row['id']}.json", record)
            if self.keep_images:
                from bundle.report import patient_report

                patient_report(self.images[i], record, patients / f"{row['id']}.png")
        write_csv(self.output_dir / "predictions.csv", PREDICTION_COLUMNS, self.rows)
        write_csv(self.output_dir / "errors.csv", ("id", "error"), list(self.errors))
        logger.info(
            "wrote %d predictions (%s) and %d errors to %s",
            len(self.rows), "deterministic, no intervals" if deterministic else s.description,
            len(self.errors), self.output_dir,
        )  # fmt: skip

    def _row(self, i: int, summary: MCSummary, deterministic: bool) -> dict[str, Any]:
        right, left = float(summary.mean_r[i]), float(summary.mean_l[i])
        row: dict[str, Any] = {
            "id": self.ids[i], "sbr_right": round(right, 4), "sbr_left": round(left, 4),
            "abnormal_right": int(right < ABNORMAL_SBR["right"]), "abnormal_left": int(left < ABNORMAL_SBR["left"]),
        }  # fmt: skip
        if deterministic:
            return row
        half_r = self.intervals.scale_r * float(summary.sigma_sym_r[i])
        half_l = self.intervals.scale_l * float(summary.sigma_sym_l[i])
        row.update(
            sigma_right=round(float(summary.sigma_r[i]), 5), sigma_left=round(float(summary.sigma_l[i]), 5),
            sigma_sym=round(float(summary.sigma_sym[i]), 5),
            low_right=round(right - half_r, 4), high_right=round(right + half_r, 4),
            low_left=round(left - half_l, 4), high_left=round(left + half_l, 4),
        )  # fmt: skip
        return row


class CalibrationWriter(MCCollector):
    """Choose gamma_r, gamma_l and the conformal scale on validation MC samples; write ``calibration.json``.

    For each side, gamma in ``gamma_grid`` maximising the sharpness-CP AUC of sigma + gamma sigma_sym is kept
    (the paper's rule, §3.4.2 / Table 5); then a split-conformal scale k makes mean +- k sigma^sym reach
    ``coverage`` with the finite-sample guarantee (beyond the paper). Done for both interval modes: ``mc``
    (gamma = 0) and ``symmetric``.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        coverage: float = 0.95,
        gamma_grid: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2)),
        sbr_max: float = 6.84,
    ) -> None:
        super().__init__(sbr_max)
        self.output_path = Path(output_path)
        self.coverage = float(coverage)
        self.gamma_grid = [float(g) for g in gamma_grid]
        self.result: dict[str, Any] = {}

    def completed(self, engine: Engine) -> None:
        if any(t is None for t in self.truths) or not self.ids:
            raise ValueError("calibration needs SBR values for every validation case")
        samples = self.sample_array()
        if samples.shape[0] < 2:
            raise ValueError("calibration needs mc_samples >= 2")
        truth = np.stack(self.truths)  # [patients, 2]
        base = summarise_mc(samples)
        modes: dict[str, dict[str, float]] = {}
        for mode in ("mc", "symmetric"):
            entry: dict[str, float] = {}
            for side, col, sigma, mean in (("r", 0, base.sigma_r, base.mean_r), ("l", 1, base.sigma_l, base.mean_l)):
                grid = [0.0] if mode == "mc" else self.gamma_grid
                aucs = [sharpness_cp_auc(truth[:, col], mean, sigma + g * base.sigma_sym) for g in grid]
                gamma = grid[int(np.argmax(aucs))]
                half = sigma + gamma * base.sigma_sym
                scale = conformal_scale(truth[:, col], mean, half, self.coverage)
                scores = np.abs(truth[:, col] - mean) / np.maximum(half, np.finfo(np.float64).tiny)
                covered = float(np.mean(scores <= scale))  # via scores: scale * half can round below |error|
                entry.update(
                    {f"gamma_{side}": gamma, f"scale_{side}": scale, f"auc_{side}": float(max(aucs)),
                     f"validation_coverage_{side}": covered,
                     f"mean_width_sbr_{side}": float(np.mean(2 * scale * half) * self.sbr_max)}
                )  # fmt: skip
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
        logger.info(
            "calibration: gamma_r=%.2f gamma_l=%.2f, conformal scale right %.3f left %.3f for %.0f%% coverage "
            "(validation coverage %.3f / %.3f) -> %s",
            sym["gamma_r"], sym["gamma_l"], sym["scale_r"], sym["scale_l"], 100 * self.coverage,
            sym["validation_coverage_r"], sym["validation_coverage_l"], self.output_path,
        )  # fmt: skip
