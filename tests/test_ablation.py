"""scripts/ablation.py and scripts/sweep.py: single-side row pieces, table/statistics assembly, resumability, and one
tiny end-to-end row through the real bundle workflows."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import experiments
import numpy as np
import pytest
import torch
from conftest import REPO
from monai.bundle import run
from PIL import Image
from scipy import stats

from bundle.evaluation.predictions import PREDICTION_COLUMNS, EvaluationData, merge_side_predictions
from bundle.method.losses import SingleSideLoss
from bundle.method.networks import SingleSideRegressor, SymmetricRegressor, VGGRegressor3D


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ablation = load_script("ablation")
sweep = load_script("sweep")


# --- the single-side row ----------------------------------------------------------------------------------------


def test_single_side_regressor_trains_one_side_only():
    class Counting(VGGRegressor3D):
        calls: list[int] = []

        def forward(self, x):
            self.calls.append(x.shape[0])
            return super().forward(x)

    torch.manual_seed(0)
    f = Counting(channels=(2, 2, 2, 2), dropout=0.0)  # deterministic in training mode too
    pair = torch.rand(3, 2, 50, 50, 20) + 0.5
    model = SingleSideRegressor(f, "left").train()
    out = model(pair)
    assert Counting.calls == [3] and out.shape == (3, 2)  # only the three left patches went through F
    f.eval()
    assert torch.allclose(out[:, 1], f(pair[:, 1:2])[:, 0].float(), atol=1e-6)
    model.eval()
    assert torch.allclose(model(pair), SymmetricRegressor(f)(pair))  # eval: F on both patches, as inference

    loss = SingleSideLoss("left")
    pred, target = torch.tensor([[0.1, 0.5], [0.9, 0.2]]), torch.tensor([[0.9, 0.4], [0.0, 0.4]])
    assert loss(pred, target) == pytest.approx(((0.5 - 0.4) ** 2 + (0.2 - 0.4) ** 2) / 2)  # eq. 1, left only
    assert loss.components(pred, target)["sym"].abs().sum() == 0


def test_merge_side_predictions(tmp_path):
    def write(path, rows):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def row(case, value):
        return {c: case if c == "id" else value for c in PREDICTION_COLUMNS}

    write(tmp_path / "r.csv", [row("A", 1), row("B", 2), row("C", 3)])
    write(tmp_path / "l.csv", [row("B", 20), row("A", 10)])
    assert merge_side_predictions(tmp_path / "r.csv", tmp_path / "l.csv", tmp_path / "m.csv") == 2
    with open(tmp_path / "m.csv") as handle:
        merged = list(csv.DictReader(handle))
    assert [r["id"] for r in merged] == ["A", "B"]
    assert merged[1]["sbr_right"] == "2" and merged[1]["sbr_left"] == "20" and merged[1]["high_left"] == "20"
    assert merged[0]["sigma_right"] == "1" and merged[0]["sigma_sym"] == ""  # no symmetric hint for two models


def test_single_side_training_config(tiny_cohort, tmp_path):
    """train.json + single_side.json through monai.bundle: checkpoint selected on the trained side's MAE."""
    run("training", config_file=[str(REPO / "configs" / "train.json"), str(REPO / "configs" / "single_side.json")],
        meta_file=str(REPO / "configs" / "metadata.json"), logging_file=str(REPO / "configs" / "logging.conf"),
        bundle_root=str(REPO), dataset_dir=str(tiny_cohort), side="left", num_epochs=1,
        output_dir=str(tmp_path / "train"), ckpt_path=str(tmp_path / "model.pt"),
        **{"network_def#channels": [2, 2, 2, 2]})  # fmt: skip
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "fc.weight" in state


# --- tables and statistics ----------------------------------------------------------------------------------


def fake_metrics(mae, with_symmetric=True):
    side = {"rmse": mae + 0.2, "mae": mae, "r": 0.7, "p": 1e-5}
    t5 = {s: {"auc": 0.7, "optimal": {"sharpness": 0.81, "cp": 0.84}, "at_95": {"sharpness": 0.72}}
          for s in ("right", "left", "avg")}  # fmt: skip
    return {"n": 10, "table3": {"right": side, "left": side, "avg": side},
            "table4": {s: {"accuracy": 0.8, "sensitivity": 0.9, "specificity": 0.7} for s in ("right", "left")},
            "agreement": {s: {"ccc": 0.6} for s in ("right", "left")},
            "table5": {"mc": t5, **({"symmetric": t5} if with_symmetric else {})}}  # fmt: skip


def test_markdown_tables_mean_and_sd_over_runs():
    results = {"single_side": [fake_metrics(0.8, False), fake_metrics(0.9, False)],
               "paired_lsym": [fake_metrics(0.6), fake_metrics(0.7)]}  # fmt: skip
    labels = {"single_side": "VGG-small", "paired_lsym": "Sym + L_sym"}
    table3 = ablation.table3_markdown(results, labels)
    assert table3.splitlines()[0].startswith("| Method | RMSE right")
    assert f"| VGG-small | {1.05:.4f} ± {np.std([1.0, 1.1], ddof=1):.4f}" in table3  # RMSE right mean ± SD
    assert "| 0.6500 ± 0.0707 |" in table3  # MAE of the second row
    table5 = ablation.table5_markdown(results, labels).splitlines()
    assert [line.split(" |")[0] for line in table5[2:]] == ["| MC + VGG-small", "| MC + Sym + L_sym",
                                                            "| Symmetric MC + Sym + L_sym"]  # fmt: skip
    assert "(0.810 ± 0.000, 0.840 ± 0.000)" in table5[2] and ablation.fmt([None]) == "n/a"
    assert ablation.fmt([0.5]) == "0.5000"


def predictions(ids, truth, pred):
    nan = np.full((len(ids), 2), np.nan)
    return EvaluationData(ids, truth, pred, nan, nan[:, 0], nan, nan)


def test_compare_rows_paired_ttest_and_mcnemar():
    truth = np.array([[2.0, 2.1], [4.0, 4.2], [3.0, 3.3], [5.0, 5.1]])
    a = predictions(["P1", "P2", "P3", "P4"], truth, truth + [[0.5, 0.1], [-0.4, 0.2], [0.6, 0.0], [1.0, -0.2]])
    b_pred = truth + [[0.1, 0.1], [-0.1, 0.0], [0.2, 0.0], [0.3, 0.0]]
    b = predictions(["P4", "P3", "P2", "P1"], truth[::-1], b_pred[::-1])
    result = ablation.compare_rows(a, b)
    err_a = np.abs(a.pred - truth).mean(axis=1)
    err_b = np.abs(b_pred - truth).mean(axis=1)  # matched by id despite the reversed order
    assert result["ttest"]["p"] == pytest.approx(stats.ttest_rel(err_a, err_b).pvalue)
    # P3 right: A predicts 3.6 (normal) against a truth of 3.0 (abnormal), B 3.2: one discordant pair for B
    assert (result["mcnemar"]["only_a_correct"], result["mcnemar"]["only_b_correct"]) == (0, 1)


# --- resumability with the real runner and a fake subprocess ------------------------------------------------


def fake_bundle_run(tiny_cohort, calls):
    """Stand-in for ``subprocess.run`` of ``monai.bundle``: records the workflow, writes its outputs."""
    test_ids = [c["id"] for c in json.loads((tiny_cohort / "datalist.json").read_text())["test"]]

    def fake(cmd, **kwargs):
        workflow = cmd[cmd.index("run") + 1]
        args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
        calls.append(workflow)
        ckpt = args.get("--ckpt_path")
        out = args.get("--output_dir")
        if workflow == "training":
            torch.save({}, ckpt)
        elif workflow == "calibrate":
            Path(ckpt).parent.joinpath("calibration.json").write_text("{}")
        elif workflow in ("inference", "evaluating"):
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
            if not (path / "predictions.csv").exists():
                rows = [",".join([i] + ["3.0"] * 11) for i in test_ids]
                (path / "predictions.csv").write_text(",".join(PREDICTION_COLUMNS) + "\n" + "\n".join(rows) + "\n")
            if workflow == "evaluating":
                (path / "metrics.json").write_text(json.dumps(fake_metrics(0.5, "paired" in out)))
        return subprocess.CompletedProcess(cmd, 0)

    return fake


def test_rows_resume_where_they_stopped(tiny_cohort, tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(experiments.subprocess, "run", fake_bundle_run(tiny_cohort, calls))
    argv = ["--out", str(tmp_path), "--dataset-dir", str(tiny_cohort), "--configs"]
    ablation.main(argv)
    assert calls.count("training") == 4 and calls.count("calibrate") == 4 and calls.count("evaluating") == 3
    assert calls.count("inference") == 2  # the two single-side models; paired rows infer inside evaluate.json
    calls.clear()
    ablation.main(argv)
    assert calls == []  # every row complete: nothing re-run
    (tmp_path / "seed0" / "paired" / "row.json").unlink()
    (tmp_path / "seed0" / "paired" / "eval" / "metrics.json").unlink()
    ablation.main(argv)
    assert calls == ["evaluating"]  # training and calibration of that row are kept
    markdown = (tmp_path / "ablation.md").read_text()
    assert markdown.count("| VGG-small (one regressor per side) |") == 2  # Table 3 and Table 4 rows
    assert "Symmetric MC + Symmetric VGG (paired, β = 0)" in markdown
    assert "MC + VGG-small" in markdown and "Symmetric MC + VGG-small" not in markdown
    assert len(json.loads((tmp_path / "ablation.json").read_text())["tests"]) == 3


def test_sweep_selects_on_validation_and_plots(tmp_path, monkeypatch):
    def fake_point(runner, out, alpha, beta, seed, train, stage):
        val = (alpha - 0.04) ** 2 + (np.log10(beta) - 0.0) ** 2 / 100 + 0.6
        return {"stage": stage, "alpha": alpha, "beta": beta, "seed": seed, "val_mae": val, "test_mae": val + 0.05}

    monkeypatch.setattr(sweep, "run_point", fake_point)
    records = sweep.main(["--out", str(tmp_path), "--alphas", "0", "0.04", "0.16", "--betas", "0.1", "1", "10"])
    assert [r["beta"] for r in records if r["stage"] == "beta"] == [0.1, 1.0, 10.0]
    assert all(r["alpha"] == 0.04 for r in records if r["stage"] == "beta")  # best alpha on validation
    with open(tmp_path / "sweep.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert json.loads((tmp_path / "sweep.json").read_text())["beta"] == 1.0
    for name in ("sweep_alpha.png", "sweep_beta.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] >= 700


# --- one real row end to end --------------------------------------------------------------------------------


def test_paired_row_end_to_end(tiny_cohort, tmp_path):
    """Training + evaluate.json (inference inside) through real subprocesses on the tiny cohort."""
    argv = ["--out", str(tmp_path), "--dataset-dir", str(tiny_cohort), "--configs", "--rows", "paired_lsym",
            "--channels", "2", "2", "2", "2", "--epochs", "1", "--mc-samples", "8", "--no-calibration"]  # fmt: skip
    result = ablation.main(argv)
    metrics = result["rows"]["paired_lsym"][0]
    assert metrics["n"] == 3 and set(metrics["table5"]) == {"mc", "symmetric"}
    row = tmp_path / "seed0" / "paired_lsym"
    with open(row / "eval" / "predictions.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    assert (row / "paired" / "model.pt").is_file() and (row / "eval" / "sharpness_cp.png").is_file()
    assert "| Symmetric VGG + L_sym (α = 0.04, β = 1) |" in (tmp_path / "ablation.md").read_text()


def test_a_baseline_row_layers_its_preset_on_every_step_without_the_width(tiny_cohort, tmp_path, monkeypatch):
    calls: list[str] = []
    commands: list[list[str]] = []
    fake = fake_bundle_run(tiny_cohort, calls)

    def recording(cmd, **kwargs):
        commands.append(cmd)
        return fake(cmd, **kwargs)

    monkeypatch.setattr(experiments.subprocess, "run", recording)
    assert ablation.parse_args([]).rows == ["single_side", "paired", "paired_lsym"]  # baselines only on request
    ablation.main(["--out", str(tmp_path), "--dataset-dir", str(tiny_cohort), "--quick", "--rows", "mobilenetv3"])
    assert calls == ["training", "calibrate", "inference"] * 2 + ["evaluating"]
    for cmd in commands:
        configs = cmd[cmd.index("--config_file") + 1]
        assert configs.endswith("'configs/baselines/mobilenetv3.json']"), configs
        assert "--network_def#channels" not in cmd  # --quick's width is the Table 1 network's, not the baseline's
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| MobileNetV3 (one regressor per side) |" in markdown
