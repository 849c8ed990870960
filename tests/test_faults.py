"""Fault injection: crash and resume, determinism, NaN guard, unsafe or mismatched checkpoints, atomic outputs,
early errors. Each test is one row of docs/reliability.md."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, bundle_env
from ignite.engine import Engine, Events

from bundle.constants import DEFAULT_SBR_MAX
from bundle.io import atomic_open, file_sha256, write_json
from bundle.method.networks import VGGRegressor3D
from bundle.workflows.checkpoints import ModelRecord, read_checkpoint
from bundle.workflows.resume import NonFiniteLossGuard, latest_checkpoint
from bundle.workflows.savers import AtomicCheckpointSaver


def train_cmd(cohort: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "bundle", "run", "training", "--config_file", "configs/train.json",
        "--dataset_dir", str(cohort), "--output_dir", str(out), "--ckpt_path", str(out / "model.pt"),
        "--network_def#channels", "[4,4,4,4]", "--num_epochs", "3", "--batch_size", "2", "--checkpoint_every", "3",
        "--amp", "false", "--learning_rate", "0.001", *extra,
    ]  # fmt: skip


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "checkpoint_epoch=3.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_cohort) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run(train_cmd(tiny_cohort, out), cwd=REPO, env=bundle_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_resume_after_sigkill_gives_the_uninterrupted_weights(uninterrupted, tiny_cohort, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(tiny_cohort, out), cwd=REPO, env=bundle_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    mid_run = out / "checkpoints" / "checkpoint_iteration=6.pt"  # 5 iterations per epoch: mid epoch 2
    deadline = time.time() + 240
    while not mid_run.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "checkpoint_epoch=3.pt").exists()
    result = subprocess.run(train_cmd(tiny_cohort, out, "--resume", "true"), cwd=REPO, env=bundle_env(),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint_" in result.stdout + result.stderr
    reference, resumed = final_weights(uninterrupted), final_weights(out)
    for key in reference:
        assert torch.allclose(reference[key], resumed[key], atol=1e-6), key


def test_same_seed_gives_identical_weights(uninterrupted, tiny_cohort, tmp_path):
    out = tmp_path / "again"
    result = subprocess.run(train_cmd(tiny_cohort, out), cwd=REPO, env=bundle_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    reference, again = final_weights(uninterrupted), final_weights(out)
    assert all(torch.equal(reference[k], again[k]) for k in reference)


def test_model_pt_records_version_and_network(uninterrupted):
    model = read_checkpoint(uninterrupted / "model.pt")
    assert model.bundle_version and model.network["channels"] == [4, 4, 4, 4]
    assert (model.sbr_max, model.sbr_max_recorded) == (DEFAULT_SBR_MAX, True)
    assert model.sha256 == file_sha256(uninterrupted / "model.pt")
    VGGRegressor3D(**model.network).load_state_dict(model.weights)


def test_model_pt_records_sbr_max_with_the_same_weight_keys(tmp_path):
    network = VGGRegressor3D(channels=(4,))
    torch.save(ModelRecord(network, sbr_max=5.5).state_dict(), tmp_path / "model.pt")
    model = read_checkpoint(tmp_path / "model.pt")
    assert list(model.weights) == list(network.state_dict())
    assert (model.sbr_max, model.sbr_max_recorded, model.network["channels"]) == (5.5, True, [4])
    assert model.check_sbr_max() == model.check_sbr_max(5.5) == 5.5
    assert model.network_args({"dropout": 0.5, "channels": [8]})["channels"] == [4]
    with pytest.raises(ValueError) as refused:
        model.check_sbr_max(6.84)
    assert str(refused.value) == (
        f"checkpoint {tmp_path / 'model.pt'} was trained with sbr_max 5.5; --sbr_max 6.84 contradicts it "
        "(drop the override: inference takes it from the checkpoint)"
    )


def test_model_pt_without_sbr_max_uses_the_default_and_says_so(tmp_path, caplog):
    path = tmp_path / "model.pt"
    state = VGGRegressor3D(channels=(4,)).state_dict()
    state._metadata[""]["bundle"] = {"bundle_version": "0.9.0", "network": {"channels": [4]}}  # as bundle 0.9 saved
    torch.save(state, path)
    model = read_checkpoint(path)
    assert (model.sbr_max, model.sbr_max_recorded, model.bundle_version) == (DEFAULT_SBR_MAX, False, "0.9.0")
    with caplog.at_level(logging.INFO, logger="bundle.workflows.checkpoints"):
        assert model.check_sbr_max() == DEFAULT_SBR_MAX
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {path} records no sbr_max (saved by bundle 0.9.0): using the default {DEFAULT_SBR_MAX}"
    ]
    assert model.check_sbr_max(5.0) == 5.0  # nothing to contradict
    model.load_into(VGGRegressor3D(channels=(4,)), "cpu")


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    losses = [0.5, 0.4, 0.3, float("nan"), 0.2]
    net = torch.nn.Linear(1, 1)
    engine = Engine(lambda e, batch: {"loss": torch.tensor(losses[e.state.iteration - 1])})
    NonFiniteLossGuard().attach(engine)
    AtomicCheckpointSaver(str(tmp_path), {"model": net}, epoch_level=False, save_interval=1, n_saved=1).attach(engine)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at epoch 1, iteration 4"):
        engine.run(range(5), max_epochs=1)
    assert [p.name for p in tmp_path.glob("*.pt")] == ["model_iteration=3.pt"]


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": VGGRegressor3D(channels=(4,))}, path)  # a pickled module object, i.e. code
    with pytest.raises(ValueError, match="cannot be loaded safely as weights"):
        read_checkpoint(path)
    (tmp_path / "checkpoints").mkdir()
    path.rename(tmp_path / "checkpoints" / "evil.pt")
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_shape_mismatch_names_the_keys(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(VGGRegressor3D(channels=(4, 4, 4, 4)).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatch: .*blocks\.0\.0\.weight"):
        read_checkpoint(path).load_into(VGGRegressor3D(channels=(8, 4, 4, 4)), "cpu")


def test_failed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old complete content\n")
    with pytest.raises(RuntimeError, match="disk went away"):
        with atomic_open(target) as handle:
            handle.write("id,sbr_right\nP1,")
            raise RuntimeError("disk went away")
    assert target.read_text() == "old complete content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]
    with pytest.raises(ValueError):
        write_json(tmp_path / "metrics.json", {"mae": float("nan")})  # invalid JSON is never written
    assert not (tmp_path / "metrics.json").exists()


def test_failed_checkpoint_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("no space left on device")

    saver = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, epoch_level=False, save_interval=1)
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", crash)
        with pytest.raises(OSError, match="no space"):
            engine.run(range(1), max_epochs=1)
    assert list(tmp_path.iterdir()) == []
    # model.pt (a fixed name, by key metric) is replaced, never removed first, and readable like any new file
    net, scores, saved = torch.nn.Linear(1, 1), iter([0.3, 0.2]), {}
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(mae=next(scores)))
    AtomicCheckpointSaver(tmp_path, {"model": ModelRecord(net, sbr_max=DEFAULT_SBR_MAX)}, save_key_metric=True,
                          key_metric_name="mae", key_metric_negative_sign=True,
                          key_metric_filename="model.pt").attach(evaluator)  # fmt: skip

    def after_the_first_save(engine: Engine) -> None:
        saved.update(data=(tmp_path / "model.pt").read_bytes(), mode=(tmp_path / "model.pt").stat().st_mode)
        monkeypatch.setattr(torch, "save", crash)  # the next, better model.pt fails to save

    evaluator.add_event_handler(Events.EPOCH_COMPLETED, after_the_first_save)
    umask = os.umask(0o022)
    try:
        with pytest.raises(OSError, match="no space"):
            evaluator.run(range(1), max_epochs=2)
    finally:
        os.umask(umask)
    assert saved["mode"] & 0o777 == 0o644
    assert (tmp_path / "model.pt").read_bytes() == saved["data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_unwritable_output_dir_is_reported_before_training(tiny_cohort, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = subprocess.run(train_cmd(tiny_cohort, blocker / "out"), cwd=REPO, env=bundle_env(),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: output folder ")
    assert "is not writable" in result.stderr and "Epoch[1]" not in result.stdout + result.stderr


def test_missing_datalist_section_is_reported_before_training(tiny_cohort, tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": json.loads((tiny_cohort / "datalist.json").read_text())["training"]}))
    result = subprocess.run(train_cmd(tiny_cohort, tmp_path / "out", "--datalist", str(datalist)), cwd=REPO,
                            env=bundle_env(), capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: datalist {datalist}: no section 'validation' (has ['training'])"
    )
    assert "Epoch[1]" not in result.stdout + result.stderr
