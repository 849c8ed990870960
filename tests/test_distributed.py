"""Multi-process training (configs/multi_gpu_train.json) as torchrun runs it: 2 CPU ranks on gloo."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.method.networks import VGGRegressor3D

REPO = Path(__file__).resolve().parents[1]
CHANNELS = [4, 4, 4, 4]
METRICS = ("val_mae", "val_mae_right", "val_mae_left", "val_r", "val_r_right", "val_r_left")


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )


def _torchrun(args: list[str], log_dir: Path, timeout: float = 300) -> tuple[int, str, dict[int, str]]:
    """Run ``torchrun --nproc_per_node=2 --standalone *args`` from the repo root; (exit code, output, rank logs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    cmd += ["--log-dir", str(log_dir), "--tee", "3", *args]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        output, _ = proc.communicate()
        output += f"\n[test] killed after {timeout} s (deadlocked collective?)"
    logs = {}
    for rank in (0, 1):
        files = sorted(log_dir.glob(f"*/attempt_0/{rank}/std*.log"))
        logs[rank] = "".join(f.read_text(errors="replace") for f in files)
    return proc.returncode, output, logs


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """16 synthetic patients split 10 / 3 / 3: the 3 validation cases do not divide over 2 ranks."""
    from bundle.synthetic.smwi_cohort import generate_cohort

    out = tmp_path_factory.mktemp("ddp_cohort") / "tiny"
    generate_cohort(out, n_patients=16, seed=3, split=(0.6, 0.2, 0.2), num_workers=1, progress=False)
    sizes = {k: len(v) for k, v in json.loads((out / "datalist.json").read_text()).items()}
    assert sizes == {"training": 10, "validation": 3, "test": 3}
    return out


def _side_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE and Pearson R per side ([N, 2] arrays, SBR units) and their side average, named as the engine metrics."""
    ref = {}
    for side, name in enumerate(("right", "left")):
        p, t = pred[:, side].astype(np.float64), true[:, side].astype(np.float64)
        ref[f"val_mae_{name}"] = float(np.abs(p - t).mean())
        ref[f"val_r_{name}"] = math.nan if p.std() == 0 or t.std() == 0 else float(np.corrcoef(p, t)[0, 1])
    for key in ("val_mae", "val_r"):
        ref[key] = (ref[f"{key}_right"] + ref[f"{key}_left"]) / 2
    return ref


def _single_process_predictions(cohort: Path, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, truth) [N, 2] in SBR units of ``state`` over the whole validation set, in this process."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    overrides = {"dataset_dir": str(cohort), "amp": False, "network_def#channels": CHANNELS}
    parser.update({**overrides, "device": "$torch.device('cpu')"})
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    data = [preprocessing(case) for case in parser.get_parsed_content("val_cases")]
    parser.get_parsed_content("network").load_state_dict(state, strict=True)
    paired = parser.get_parsed_content("paired_network").eval()  # wraps the same, now loaded, @network
    with torch.no_grad():
        pred = paired(torch.stack([d["image"] for d in data]))
    true = torch.stack([torch.as_tensor(d["label"]) for d in data])
    return pred.numpy() * parser["sbr_max"], true.numpy() * parser["sbr_max"]


def test_two_rank_training_matches_a_single_process(tmp_path, cohort):
    out = tmp_path / "run"
    extra = tmp_path / "test_finalize.json"
    save = "os.path.join(@output_dir, '{}' + os.environ['RANK'] + '.pt')"
    extra.write_text(
        json.dumps(
            {
                "+finalize": [
                    f"$torch.save(@network.state_dict(), {save.format('rank')})",
                    "$torch.save({k: float(v) for k, v in @validate#evaluator.state.metrics.items()}, "
                    f"{save.format('metrics')})",
                    # validation fits one batch per rank: the last output holds all of this rank's cases
                    # (in SBR units already: the evaluator's postprocessing)
                    "$torch.save({k: @validate#evaluator.state.output[k] for k in ('pred', 'label')}, "
                    f"{save.format('val')})",
                ]
            }
        )
    )
    configs = ["configs/train.json", "configs/multi_gpu_train.json", str(extra)]
    args = ["-m", "bundle", "run", "training", "--config_file", repr(configs)]
    args += ["--network_def#channels", json.dumps(CHANNELS), "--num_epochs", "2", "--batch_size", "2"]
    args += ["--amp", "False", "--output_dir", str(out), "--ckpt_path", str(out / "model.pt")]
    args += ["--dataset_dir", str(cohort)]
    code, output, logs = _torchrun(args, tmp_path / "logs")
    assert code == 0, output[-6000:]

    # DDP keeps the replicas identical
    states = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    assert all(not k.startswith("module.") for k in states[0])
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key

    # the best checkpoint is the plain single-side network's state dict
    VGGRegressor3D(channels=CHANNELS).load_state_dict(torch.load(out / "model.pt", weights_only=True), strict=True)

    # validation: 3 cases over 2 ranks (2 + 1), each case exactly once ...
    shards = [torch.load(out / f"val{r}.pt", weights_only=True) for r in (0, 1)]
    assert [len(s["pred"]) for s in shards] == [2, 1]
    pred = torch.cat([s["pred"] for s in shards]).numpy()
    true = torch.cat([s["label"] for s in shards]).numpy()
    single_pred, single_true = _single_process_predictions(cohort, states[0])
    order = np.lexsort(true.T[::-1])
    np.testing.assert_allclose(true[order], single_true[np.lexsort(single_true.T[::-1])], rtol=1e-6)
    # ... with the final weights (the last validation used them) ...
    np.testing.assert_allclose(pred[order], single_pred[np.lexsort(single_true.T[::-1])], atol=1e-4)
    # ... and the metrics, synced across ranks, are those of the whole set
    metrics = [torch.load(out / f"metrics{r}.pt", weights_only=True) for r in (0, 1)]
    ref = _side_metrics(pred, true)
    for key in METRICS:
        assert metrics[0][key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6, nan_ok=True), key
        assert metrics[1][key] == pytest.approx(metrics[0][key], nan_ok=True), key
    single_mae = _side_metrics(single_pred, single_true)["val_mae"]
    assert metrics[0]["val_mae"] == pytest.approx(single_mae, abs=1e-4)
    logged = re.findall(r"Epoch\[2\] Metrics -- val_mae: ([0-9.]+)", logs[0])
    assert logged and float(logged[-1]) == pytest.approx(single_mae, abs=1e-4)

    # side effects on rank 0 only: one TensorBoard writer, stats logging, progress bar, checkpoint
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert "Metrics -- val_mae" in logs[0] and "L_reg" in logs[0] and "loss_reg" in logs[0]
    assert "Metrics --" not in logs[1] and "L_reg" not in logs[1] and "loss_reg" not in logs[1]
    assert "Got new best metric of val_mae" in logs[1]  # the evaluator (ValidationHandler) did run on rank 1


RANK_ZERO_FIRST = """
import os, sys, time
import torch.distributed as dist
from bundle.workflows.setup import rank_zero_first

dist.init_process_group("gloo")
rank, marker = dist.get_rank(), sys.argv[1]

def make(path):
    if not os.path.exists(path):
        time.sleep(0.5 if rank == 0 else 0.0)
        with open(path, "a") as f:
            f.write(f"made by {rank}\\n")
    return open(path).read()

assert rank_zero_first(make, marker) == "made by 0\\n"

def fail():
    raise OSError("disk full")

try:
    rank_zero_first(fail)
except OSError as err:
    assert rank == 0 and "disk full" in str(err)
except RuntimeError as err:
    assert rank == 1 and "fail failed on rank 0: OSError: disk full" in str(err), err
else:
    raise AssertionError("no error")
dist.destroy_process_group()
print("rank", rank, "ok")
"""


def test_rank_zero_first_runs_rank_zero_alone_first_and_shares_its_failure(tmp_path):
    script = tmp_path / "rank_zero_first.py"
    script.write_text(textwrap.dedent(RANK_ZERO_FIRST))
    code, output, logs = _torchrun([str(script), str(tmp_path / "marker.txt")], tmp_path / "logs", timeout=120)
    assert code == 0, output[-4000:]
    assert "rank 0 ok" in logs[0] and "rank 1 ok" in logs[1]
