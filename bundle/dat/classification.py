"""Predictions and classification metrics of the DaT bundles: a handler that writes ``predictions.csv``, binary
accuracy / sensitivity / specificity and one-vs-rest ROC AUC with the Youden operating point (scikit-learn)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from sklearn.metrics import roc_auc_score, roc_curve

from bundle.io import write_csv, write_json

__all__ = ["ClassPredictionWriter", "read_class_predictions", "binary_metrics", "one_vs_rest", "write_metrics"]


class ClassPredictionWriter:
    """Collect ``id``, ``label`` and the softmax probabilities of every batch of an evaluator (``decollate=False``)
    and write ``<output_dir>/predictions.csv`` atomically when it completes."""

    def __init__(self, output_dir: str, classes: Sequence[str], filename: str = "predictions.csv") -> None:
        self.path, self.classes, self.rows = Path(output_dir) / filename, list(classes), []

    def attach(self, engine: Engine) -> None:  # noqa: D102
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        probabilities = torch.softmax(output["pred"].float(), 1).cpu().numpy()
        labels = batch.get("label")
        for i, case_id in enumerate(batch["id"]):
            row = {"id": case_id, "label": int(labels[i]) if labels is not None else "",
                   "predicted": self.classes[int(probabilities[i].argmax())]}  # fmt: skip
            row.update(
                {f"p_{name}": round(float(p), 6) for name, p in zip(self.classes, probabilities[i], strict=True)}
            )
            self.rows.append(row)

    def _write(self, _engine: Engine) -> None:
        columns = ["id", "label", "predicted", *(f"p_{name}" for name in self.classes)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(self.path, columns, self.rows)


def read_class_predictions(path: str | Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, true labels [N] and probabilities [N, classes] of a ``predictions.csv``."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or rows[0]["label"] == "":
        raise ValueError(f"{path}: no labelled predictions to evaluate")
    ids = [row["id"] for row in rows]
    labels = np.array([int(row["label"]) for row in rows])
    probabilities = np.array([[float(row[f"p_{name}"]) for name in classes] for row in rows])
    return ids, labels, probabilities


def binary_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float | int]:
    """Accuracy, sensitivity (positive = 1) and specificity with the confusion counts."""
    labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    tp, tn = int((labels & predicted).sum()), int((~labels & ~predicted).sum())
    fp, fn = int((~labels & predicted).sum()), int((labels & ~predicted).sum())
    return {"accuracy": (tp + tn) / max(1, labels.size), "sensitivity": tp / max(1, tp + fn),
            "specificity": tn / max(1, tn + fp), "tp": tp, "fn": fn, "fp": fp, "tn": tn}  # fmt: skip


def one_vs_rest(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per class: ROC AUC of its probability against the rest and the sensitivity / specificity at the Youden
    point; ``macro_auc`` is their mean (classes absent from ``labels`` are left out)."""
    result: dict[str, Any] = {}
    for index, name in enumerate(classes):
        positive = labels == index
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, index])
        best = int(np.argmax(tpr - fpr))
        result[name] = {
            "auc": float(roc_auc_score(positive, probabilities[:, index])),
            "sensitivity": float(tpr[best]),
            "specificity": float(1 - fpr[best]),
            "n": int(positive.sum()),
        }
    result["macro_auc"] = float(np.mean([v["auc"] for v in result.values()]))
    return result


def write_metrics(predictions: str, classes: Sequence[str], output_dir: str, **extra: Any) -> dict[str, Any]:
    """``metrics.json`` in ``output_dir`` from ``predictions.csv``: binary metrics for two classes (positive = the
    second), one-vs-rest AUC for more; ``extra`` entries are added (e.g. the binding-ratio comparison)."""
    ids, labels, probabilities = read_class_predictions(predictions, classes)
    metrics: dict[str, Any] = {"n": len(ids), "classes": list(classes)}
    if len(classes) == 2:
        metrics.update(binary_metrics(labels, probabilities.argmax(1)))
        metrics["auc"] = one_vs_rest(labels, probabilities, classes).get(classes[1], {}).get("auc")
    else:
        metrics["accuracy"] = float((probabilities.argmax(1) == labels).mean())
        metrics["one_vs_rest"] = one_vs_rest(labels, probabilities, classes)
        metrics["macro_auc"] = metrics["one_vs_rest"]["macro_auc"]
    metrics.update(extra)
    write_json(Path(output_dir) / "metrics.json", metrics)
    return metrics
