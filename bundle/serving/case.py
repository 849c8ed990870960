"""Predict one patient in-process with the bundle's own ``inference`` workflow (same preprocessing, localiser,
symmetric MC dropout, intervals and report as ``python -m monai.bundle run inference``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundle.constants import ABNORMAL_SBR, MC_SAMPLES, SIDES
from bundle.io import write_json
from bundle.resources import bundle_root as default_bundle_root

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

    from bundle.handlers.writers import PredictionWriter

__all__ = ["CaseFailed", "CasePrediction", "predict_case", "localise_case", "default_checkpoint"]

WRITER_ID = "prediction_writer"
"""Config id of the inference workflow's :class:`~bundle.handlers.writers.PredictionWriter`; without it, the first
``PredictionWriter`` of ``handlers``."""


class CaseFailed(RuntimeError):
    """The case could not be predicted; the message is its one-line error (its row of ``errors.csv``)."""


@dataclass(frozen=True)
class CasePrediction:
    """One patient's result: ``record`` is every column of ``predictions.csv`` (numbers typed, empty cells None)
    and the rest of ``patients/<id>.json`` (``true_sbr_*``, ``mc_samples``, interval settings), as the workflow's
    writer holds them; ``report_png`` the patient report (None with ``reports`` off) and ``output_dir`` the inference
    run's folder, where the files are written too."""

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


SET_PER_CASE = frozenset({"bundle_root", "datalist", "dataset_dir", "section", "output_dir", "ckpt_path", "mc_samples"})
"""Config ids that :func:`predict_case` sets itself (its arguments and the one-case datalist); not overrides."""


def predict_case(
    case: Mapping[str, Any],
    output_dir: str | os.PathLike,
    ckpt_path: str | os.PathLike | None = None,
    mc_samples: int = MC_SAMPLES,
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    bundle_root: str | os.PathLike | None = None,
) -> CasePrediction:
    """Run the ``inference`` workflow on the one datalist ``case`` (``id``, ``image``, optional centroids; without
    them the localiser finds them) with its outputs in ``output_dir`` and return the prediction, taken from the
    workflow's :class:`~bundle.handlers.writers.PredictionWriter` (its files are written, not read back).

    ``bundle_root`` (default :func:`bundle.resources.bundle_root`) gives ``configs/`` and, without ``ckpt_path``,
    ``models/``; an installed package has no models, so give ``ckpt_path`` and the ``localiser_path`` override.

    Raises:
        CaseFailed: with the case's one-line error when it could not be predicted.
        ValueError: an override of an id in :data:`SET_PER_CASE` (one line).
    """
    from monai.bundle import create_workflow

    if clashes := sorted(SET_PER_CASE & set(overrides or {})):
        raise ValueError(f"{', '.join(clashes)}: set per case by predict_case (its arguments), not an override")

    from bundle.evaluation.predictions import PREDICTION_COLUMNS

    root, out = Path(bundle_root or default_bundle_root()), Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    datalist = out / "datalist.json"
    write_json(datalist, {"test": [dict(case)]})
    workflow = create_workflow(
        config_file=[str(root / "configs" / "inference.json"), *map(str, config_files)], run_id="inference",
        meta_file=str(root / "configs" / "metadata.json"), logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root), datalist=str(datalist), dataset_dir=str(out), section="test", output_dir=str(out),
        ckpt_path=str(ckpt_path or default_checkpoint(root / "models")), mc_samples=mc_samples,
        **{"reports": True, **dict(overrides or {})},
    )  # fmt: skip
    workflow.run()
    workflow.finalize()
    writer = _prediction_writer(workflow.parser)
    if writer.error_rows:
        raise CaseFailed(writer.error_rows[0]["error"])
    if len(writer.records) != 1:
        raise CaseFailed(f"{case.get('id', '?')}: the inference run gave {len(writer.records)} predictions, not 1")
    record = {**dict.fromkeys(PREDICTION_COLUMNS), **writer.records[0]}
    report = writer.report_files[0]
    return CasePrediction(record, report if report and report.is_file() else None, out)


def _prediction_writer(parser: ConfigParser) -> PredictionWriter:
    """The inference config's ``prediction_writer`` (:data:`WRITER_ID`), else the first ``PredictionWriter`` of its
    ``handlers``, as the run instantiated it."""
    from bundle.handlers.writers import PredictionWriter

    if WRITER_ID in parser:
        return parser.get_parsed_content(WRITER_ID)
    found = [h for h in parser.get_parsed_content("handlers") if isinstance(h, PredictionWriter)]
    if not found:
        raise LookupError(f"the inference config has neither {WRITER_ID!r} nor a PredictionWriter in 'handlers'")
    return found[0]


def localise_case(
    case: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    bundle_root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """``case`` with world centroids from the localiser exactly as the ``inference`` workflow configures it
    (``auto_centroids`` of inference.json with ``overrides``: ``localiser_path``, ``plausibility``, mirror averaging);
    ``bundle_root`` as in :func:`predict_case`.

    Raises:
        CaseFailed: with the one-line reason when the localiser's result is refused.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_root or default_bundle_root())
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), **dict(overrides or {})})
    try:
        return parser.get_parsed_content("auto_centroids")(dict(case))
    except ValueError as err:
        raise CaseFailed(str(err)) from None
