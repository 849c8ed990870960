"""MLflow tracking: MONAI's standard ``--tracking mlflow`` flag on training and evaluation (mlflow extra)."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, bundle_env, require_extra, workflow_configs
from ignite.engine import Engine
from monai.handlers import MLFlowHandler, from_engine

from bundle.handlers.tracking import flat_metrics, scalar_loss, tracked

MlflowClient = require_extra("mlflow.tracking", "mlflow").MlflowClient
require_extra("sqlalchemy", "mlflow")

TINY = ["--network_def#channels", "[2,2,2,2]"]


def run_tracked(workflow: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bundle", "run", workflow, "--config_file", repr(workflow_configs(workflow)),
           "--tracking", "mlflow", *TINY, *args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=600)


def only_run(output_dir):
    client = MlflowClient(f"sqlite:///{output_dir}/mlruns.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "nigral_sbr"]
    (run,) = client.search_runs(experiment.experiment_id)
    return client, run


@pytest.fixture(scope="module")
def tracked_training(tmp_path_factory, tiny_cohort):
    out = tmp_path_factory.mktemp("mlflow") / "train"
    result = run_tracked("training", "--dataset_dir", str(tiny_cohort), "--num_epochs", "2", "--output_dir", str(out),
                         "--ckpt_path", str(out / "model.pt"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_tracked_training_finishes_with_losses_metrics_config_and_model(tracked_training):
    client, run = only_run(tracked_training)
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id
    assert len(client.get_metric_history(run_id, "val_mae")) == 2  # one per epoch
    for name in ("train_loss", "loss_reg", "loss_sym", "val_r", "val_mae_right", "val_mae_left"):
        assert client.get_metric_history(run_id, name), name
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    assert "model.pt" in artifacts
    config_files = [a for a in artifacts if a.startswith("config_") and a.endswith(".json")]
    assert config_files, artifacts
    local = client.download_artifacts(run_id, config_files[0], str(tracked_training / "download"))
    assert json.loads(open(local).read())["network_def"]["channels"] == [2, 2, 2, 2]


def test_tracked_evaluation_logs_the_metrics_json_values(tracked_training, tiny_cohort, tmp_path):
    out = tmp_path / "eval"
    result = run_tracked("evaluating", "--dataset_dir", str(tiny_cohort), "--ckpt_path", str(tracked_training /
                         "model.pt"), "--output_dir", str(out), "--mc_samples", "3", "--figures", "False")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(out)
    assert run.info.status == "FINISHED"
    written = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["table3/avg/mae"] == pytest.approx(written["table3"]["avg"]["mae"])
    assert run.data.metrics["n"] == written["n"] == 3
    assert {"metrics.json", "predictions.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_scalar_loss_unwraps_the_non_decollated_output():
    transform = scalar_loss(from_engine(["loss"], first=True))
    assert from_engine(["loss"], first=True)({"loss": torch.tensor(0.25)}) == (torch.tensor(0.25),)  # MONAI's form
    assert transform({"loss": torch.tensor(0.25)}) == 0.25


def test_flat_metrics_keeps_numbers_only():
    assert flat_metrics({"n": 3, "a": {"b": 1.5, "ok": True, "text": "x", "nan": float("nan")}}) == {
        "n": 3.0,
        "a/b": 1.5,
    }


def test_a_run_that_raises_ends_failed_and_the_error_propagates(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    handler = MLFlowHandler(tracking_uri=uri, experiment_name="nigral_sbr", output_transform=lambda o: o["loss"])

    def step(engine, batch):
        if engine.state.iteration == 2:
            raise RuntimeError("diverged")
        return {"loss": torch.tensor(1.0)}

    engine = Engine(step)
    for h in tracked([handler]):
        h.attach(engine)
    with pytest.raises(RuntimeError, match="diverged"):
        engine.run(range(4), max_epochs=1)
    _, run = only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert [m.value for m in MlflowClient(uri).get_metric_history(run.info.run_id, "Loss")] == [1.0]
