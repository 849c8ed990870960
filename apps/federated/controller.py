"""The server side: FedAvg that weights each site by its training cases and keeps the best global model.

NVFlare's ``FedAvg`` saves a model every round, or selects by a stop condition on the aggregated metric; it does not
validate the final aggregate, and it weights metrics like weights. This controller (a ``ModelController``, NVFlare's
documented extension point) sends the global model, has every site validate it on its own validation cases before
training on it, weights the parameters by training cases and the validation MAE by validation cases, and after the
last round has the sites validate the final aggregate. The global model with the lowest weighted validation MAE is
written as ``model.pt`` in the bundle's checkpoint format (state dict + the training record), so
``python -m bundle run inference --ckpt_path .../model.pt`` reads it; ``rounds.csv`` logs each site's figures per
round. A round goes on without the sites that fail or drop out, as long as ``min_clients`` answered.
"""

from __future__ import annotations

import csv
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

INFO_KEY = "bundle"  # bundle.workflows.checkpoints.INFO_KEY (tested equal), repeated so the server needs no MONAI
TASKS = ("train", "validate")  # what the server asks of a site; both results carry weights
ROUNDS_CSV = ("round", "site", "val_mae_of_received_model", "n_val", "n_train", "train_steps")


class SiteWeightedFedAvg(ModelController):
    """FedAvg with site-local validation and the best global model by weighted validation MAE.

    Args:
        initial_model: ``.npz`` file of the starting weights (by name), the network a single-site run would start from.
        model_info: the training record stored in ``model.pt`` (bundle version, network config, ``sbr_max``).
        output_dir: where ``model.pt`` and ``rounds.csv`` go (on the server).
        num_rounds: federated rounds.
        min_clients: sites that must answer in every round; fewer ends the job with an error.
        timeout: seconds a round waits for the sites (0: no limit); a site that has not answered by then is left out.

    The job (:func:`apps.federated.job.build_job`) passes every argument; their defaults are those of
    :class:`apps.federated.settings.FederatedSettings`.
    """

    def __init__(self, initial_model: str, model_info: dict[str, Any], output_dir: str,
                 num_rounds: int, min_clients: int, timeout: int) -> None:  # fmt: skip
        super().__init__(ignore_result_error=True)  # a failed site is left out of the round, not the end of the job
        self.initial_model = initial_model
        self.model_info = model_info
        self.output_dir = str(output_dir)  # a plain string: NVFlare writes the job config from these attributes
        self.num_rounds = int(num_rounds)
        self.min_clients = int(min_clients)
        self.timeout = int(timeout)
        self.best_mae = math.inf

    def run(self) -> None:
        Path(self.output_dir).mkdir(parents=True, exist_ok=True)
        with np.load(self.initial_model) as stored:
            params = {k: stored[k] for k in stored.files}
        for round_ in range(self.num_rounds + 1):
            final = round_ == self.num_rounds  # validation of the last aggregate only
            task = TASKS[1] if final else TASKS[0]
            model = FLModel(params=params, params_type=ParamsType.FULL, current_round=round_,
                            total_rounds=self.num_rounds)  # fmt: skip
            results = [r for r in self.send_model_and_wait(task, model, None, None, self.timeout)
                       if r.metrics and "val_mae" in r.metrics]  # fmt: skip
            if len(results) < self.min_clients:
                answered = len(results)
                self.panic(f"round {round_}: {answered} site(s) answered, fewer than min_clients {self.min_clients}")
                return
            self._log(round_, results)
            mae = _weighted([r.metrics["val_mae"] for r in results], [r.meta["n_val"] for r in results])
            if round_ > 0 and mae < self.best_mae:  # round 0 validates the untrained initial weights
                self.best_mae = mae
                self._save(params, round_, mae)
            if not final:
                params = _aggregate(params, results)
        best = Path(self.output_dir) / "model.pt"
        self.info(f"best global model: weighted validation MAE {self.best_mae:.4f} -> {best}")

    def _log(self, round_: int, results: list[FLModel]) -> None:
        path = Path(self.output_dir) / "rounds.csv"
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(ROUNDS_CSV)
            for r in sorted(results, key=lambda r: r.meta.get("site", "")):
                row = (round_, r.meta.get("site"), round(float(r.metrics["val_mae"]), 5), r.meta["n_val"],
                       r.meta["n_train"], r.meta.get("train_steps", 0))  # fmt: skip
                writer.writerow(row)
                self.info(f"round {round_} {row[1]}: validation MAE of the received model {row[2]:.4f}")

    def _save(self, params: dict[str, np.ndarray], round_: int, mae: float) -> None:
        """``model.pt`` (atomically): the weights with the training record in the state dict's metadata."""
        state = OrderedDict((k, torch.as_tensor(np.asarray(v))) for k, v in params.items())
        record = {**self.model_info, "federated": {"round": round_, "weighted_val_mae": mae}}
        state._metadata = OrderedDict({"": {INFO_KEY: record}})  # type: ignore[attr-defined]
        tmp = Path(self.output_dir) / ".model.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, Path(self.output_dir) / "model.pt")
        self.info(f"round {round_}: new best global model, weighted validation MAE {mae:.4f}")


def _aggregate(params: dict[str, np.ndarray], results: list[FLModel]) -> dict[str, np.ndarray]:
    """Training-case-weighted mean of the sites' weights (a weight difference is added to the global weights first);
    a variable no site sent (a privacy filter excluded it) keeps its global value."""
    new = {}
    for key, value in params.items():
        sent = [(r, r.params[key]) for r in results if r.params and key in r.params]
        if not sent:
            new[key] = value
            continue
        arrays = [value + np.asarray(a) if r.params_type == ParamsType.DIFF else a for r, a in sent]
        new[key] = _weighted_arrays(arrays, [r.meta["n_train"] for r, _ in sent])
    return new


def _weighted(values: list[float], weights: list[float]) -> float:
    return float(np.average(np.asarray(values, dtype=np.float64), weights=np.asarray(weights, dtype=np.float64)))


def _weighted_arrays(arrays: list[Any], weights: list[float]) -> np.ndarray:
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    w = np.asarray(weights, dtype=np.float64)
    return (np.tensordot(w / w.sum(), stacked, axes=1)).astype(np.asarray(arrays[0]).dtype)
