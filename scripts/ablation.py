"""Ablation of the symmetric regressor (paper Tables 3-5) on one split with the same seeds for every row.

Rows, each trained with the bundle's own training workflow and evaluated with the ``evaluating`` workflow:

- ``single_side``  (a) "VGG-small", the standard regressor: one model per side, trained on that side only with the
                   plain regression loss (``configs/train.json`` + ``configs/single_side.json``), no pairing;
- ``paired``       (b) symmetric VGG: one shared F on both patches (eq. 3) with beta = 0 (L_reg only);
- ``paired_lsym``  (c) symmetric VGG + L_sym (eq. 7, alpha = 0.04, beta = 1 by default);
- on request (``--rows ... resnet18 vit vgg16 mobilenetv3``): Table 3's baselines, each trained like row (a) with
                   its ``configs/baselines/<arch>.json`` preset layered last on every step.

For each model: training -> calibration on the validation split (gamma_r, gamma_l and the conformal scale) ->
symmetric MC inference on the test split -> ``metrics.json``. The single-side row merges the right model's right
predictions with the left model's left predictions. Results: ``{out}/ablation.md`` (Table 3-, 4- and 5-shaped
tables plus paired tests: Student's paired t-test on per-patient absolute errors, averaged over the two sides, and
McNemar's exact test on the per-side normal/abnormal agreement, both sides pooled) and ``{out}/ablation.json``.

Every step is skipped when its output exists, so re-running the command resumes an interrupted ablation; a row is
complete when ``{out}/{run}/{row}/row.json`` exists. ``--repeats K`` repeats everything with seeds seed..seed+K-1
and reports mean ± SD over the runs (several ``--datalist`` files, e.g. the k-fold files of
``scripts/make_datalist.py --kfold``, are further repeats over folds).

Usage (from the repository root; the demo cohort is generated on first use)::

    python scripts/ablation.py --quick                  # tiny width, 3 epochs: a smoke run of the whole pipeline
    python scripts/ablation.py                          # configs/demo.json: width 16-32-64-128, 70 epochs
    python scripts/ablation.py --repeats 3 --configs    # no demo.json: Table 1 width, 100 epochs, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments import (  # noqa: E402
    BundleRunner,
    add_common_arguments,
    common_settings,
    datalist_path,
    hardware,
    thread_env,
)

from bundle.constants import MC_SAMPLES, SIDES  # noqa: E402
from bundle.evaluation.predictions import (  # noqa: E402
    EvaluationData,
    load_truths,
    merge_side_predictions,  # noqa: E402
    pair_predictions,
    read_predictions,
)
from bundle.evaluation.statistics import mcnemar_exact, paired_ttest  # noqa: E402
from bundle.evaluation.tables import json_safe  # noqa: E402
from bundle.io import write_json, write_text  # noqa: E402

logger = logging.getLogger("ablation")

QUICK = {"channels": [8, 16, 32, 64], "epochs": 3, "mc_samples": 30}
"""``--quick``: a CPU smoke run of the whole pipeline (a few minutes on 2 cores), not a meaningful comparison."""


@dataclass(frozen=True)
class Row:
    """One ablation row: its models (name -> extra training configs, training overrides) and the network preset
    every step of the row layers last (a Table 3 baseline's ``configs/baselines/<arch>.json``; none: Table 1)."""

    name: str
    label: str
    models: Mapping[str, tuple[tuple[str, ...], Mapping[str, Any]]]
    network_configs: tuple[str, ...] = ()

    @property
    def paired(self) -> bool:
        return "paired" in self.models


def make_rows(alpha: float, beta: float) -> dict[str, Row]:
    single = ("configs/single_side.json",)
    return {
        "single_side": Row("single_side", "VGG-small (one regressor per side)",
                           {"right": (single, {"side": "right"}), "left": (single, {"side": "left"})}),
        "paired": Row("paired", "Symmetric VGG (paired, β = 0)", {"paired": ((), {"beta": 0.0})}),
        "paired_lsym": Row("paired_lsym", f"Symmetric VGG + L_sym (α = {alpha:g}, β = {beta:g})",
                           {"paired": ((), {"alpha": alpha, "beta": beta})}),
        **{arch: Row(arch, f"{label} (one regressor per side)",
                     {"right": (single, {"side": "right"}), "left": (single, {"side": "left"})},
                     (f"configs/baselines/{arch}.json",))
           for arch, label in BASELINE_ROWS.items()},
    }  # fmt: skip


BASELINE_ROWS = {"resnet18": "ResNet-18 (3D)", "vit": "ViT (3D)", "vgg16": "VGG-16 (3D)", "mobilenetv3": "MobileNetV3"}
"""Table 3's baseline rows (``--rows resnet18 vit vgg16 mobilenetv3``), trained like the VGG-small row."""
DEFAULT_ROWS = ("single_side", "paired", "paired_lsym")


@dataclass(frozen=True)
class Settings:
    """What every row shares (same split, seeds, width, epochs, MC samples)."""

    out: Path
    runs: list[tuple[str, str | None, int]]  # (run folder, datalist or None for the default, seed)
    common: dict[str, Any] = field(default_factory=dict)  # overrides for every workflow
    train: dict[str, Any] = field(default_factory=dict)  # overrides for training only
    mc_samples: int = MC_SAMPLES
    coverage: float = 0.95
    calibrate: bool = True
    configs: list[str] = field(default_factory=list)  # config files layered on every workflow


def run_row(runner: BundleRunner, row: Row, settings: Settings, run: str, datalist: str | None, seed: int) -> dict:
    """Train, calibrate, infer and evaluate one row of one run; skipped when its ``row.json`` exists."""
    row_dir = settings.out / run / row.name
    done = row_dir / "row.json"
    if done.exists():
        logger.info("%s/%s complete, skipped", run, row.name)
        return json.loads(done.read_text())
    data = {"datalist": datalist} if datalist else {}
    mc = {"mc_samples": settings.mc_samples, "seed": seed, **data}
    walls: dict[str, float] = {}
    network = list(row.network_configs)
    if network:  # a baseline: the width override of the Table 1 network does not apply
        runner = replace(runner, common={k: v for k, v in runner.common.items() if not k.startswith("network_def#")})
    for model, (configs, overrides) in row.models.items():
        configs = (*configs, *network)
        model_dir = row_dir / model
        ckpt = model_dir / "model.pt"
        train_overrides = {**settings.train, **overrides, "seed": seed, "output_dir": str(model_dir / "train"),
                           "ckpt_path": str(ckpt), **data}  # fmt: skip
        if (model_dir / "train" / "checkpoints").is_dir() and not (model_dir / "train.done.json").exists():
            train_overrides["resume"] = True  # an interrupted training goes on from its last full-state checkpoint
        walls[f"train_{model}"] = runner.run("training", configs, train_overrides,
                                             model_dir / "train.done.json")  # fmt: skip
        if settings.calibrate:
            walls[f"calibrate_{model}"] = runner.run(
                "calibrate", network,
                {**mc, "ckpt_path": str(ckpt), "coverage": settings.coverage}, model_dir / "calibration.json",
            )  # fmt: skip
        if not row.paired:
            walls[f"inference_{model}"] = runner.run(
                "inference", network,
                {**mc, "ckpt_path": str(ckpt), "output_dir": str(model_dir / "test"), "reports": False},
                model_dir / "test" / "predictions.csv",
            )  # fmt: skip
    evaluation = {**mc, "output_dir": str(row_dir / "eval"), "ckpt_path": str(row_dir / next(iter(row.models)) /
                                                                              "model.pt")}  # fmt: skip
    if not row.paired:
        merge_side_predictions(
            row_dir / "right" / "test" / "predictions.csv",
            row_dir / "left" / "test" / "predictions.csv",
            row_dir / "eval" / "predictions.csv",
        )
        evaluation["run_inference"] = False
    walls["evaluate"] = runner.run("evaluating", network, evaluation,
                                   row_dir / "eval" / "metrics.json")  # fmt: skip
    record = {"row": row.name, "label": row.label, "run": run, "seed": seed, "datalist": datalist,
              "wall_s": round(sum(walls.values()), 1),
              "steps_s": {k: round(v, 1) for k, v in walls.items()}}  # fmt: skip
    write_json(done, record)
    return record


# --- aggregation ------------------------------------------------------------------------------------------------


def fmt(values: Sequence[float | None], digits: int = 4) -> str:
    """One value, or mean ± SD (sample SD) over repeats; "n/a" when missing."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1):.{digits}f}"


def _get(metrics: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(metrics, Mapping) or metrics.get(key) is None:
            return None
        metrics = metrics[key]
    return metrics


def table3_markdown(results: Mapping[str, Sequence[Mapping[str, Any]]], labels: Mapping[str, str]) -> str:
    """Table 3 shape: RMSE, MAE, R per side and averaged (SBR units); ``results[row]`` = metrics.json per run."""
    cols = [(q, s) for q in ("rmse", "mae", "r") for s in (*SIDES, "avg")]
    lines = ["| Method | " + " | ".join(f"{q.upper() if q != 'r' else 'R'} {s}" for q, s in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]  # fmt: skip
    for row, runs in results.items():
        cells = [fmt([_get(m, "table3", s, q) for m in runs]) for q, s in cols]
        lines.append(f"| {labels[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table4_markdown(results: Mapping[str, Sequence[Mapping[str, Any]]], labels: Mapping[str, str]) -> str:
    """Table 4 shape: (accuracy, sensitivity, specificity) per side, and Lin's CCC per side (2023 paper)."""
    lines = ["| Method | Right (acc., sen., spe.) | Left (acc., sen., spe.) | CCC right | CCC left |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row, runs in results.items():
        cells = []
        for side in SIDES:
            parts = [fmt([_get(m, "table4", side, q) for m in runs], 3) for q in ("accuracy", "sensitivity",
                                                                                  "specificity")]  # fmt: skip
            cells.append("(" + ", ".join(parts) + ")")
        cells += [fmt([_get(m, "agreement", s, "ccc") for m in runs], 3) for s in SIDES]
        lines.append(f"| {labels[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table5_markdown(results: Mapping[str, Sequence[Mapping[str, Any]]], labels: Mapping[str, str]) -> str:
    """Table 5 shape per interval mode: optimal (sharpness, CP), sharpness at 95 % CP, and the AUC (average)."""
    lines = ["| Method | Optimal (Sharpness, CP) right | left | avg. | Sharpness @ 95% CP right | left | avg. "
             "| AUC avg. |", "|---" * 8 + "|"]  # fmt: skip
    for row, runs in results.items():
        for mode, name in (("mc", "MC"), ("symmetric", "Symmetric MC")):
            if all(_get(m, "table5", mode) is None for m in runs):
                continue
            optimal = ["(" + ", ".join(fmt([_get(m, "table5", mode, s, "optimal", q) for m in runs], 3)
                                       for q in ("sharpness", "cp")) + ")" for s in (*SIDES, "avg")]  # fmt: skip
            at95 = [fmt([_get(m, "table5", mode, s, "at_95", "sharpness") for m in runs], 3) for s in (*SIDES, "avg")]
            auc = fmt([_get(m, "table5", mode, "avg", "auc") for m in runs], 3)
            lines.append(f"| {name} + {labels[row]} | " + " | ".join([*optimal, *at95, auc]) + " |")
    return "\n".join(lines)


def compare_rows(a: EvaluationData, b: EvaluationData) -> dict[str, Any]:
    """Paired t-test of per-patient absolute errors (mean of the sides) and McNemar on per-side agreement."""
    common = [i for i in a.ids if i in set(b.ids)]
    ia, ib = [a.ids.index(i) for i in common], [b.ids.index(i) for i in common]
    t = paired_ttest(a.abs_error[ia].mean(axis=1), b.abs_error[ib].mean(axis=1))
    correct_a = a.abnormal(a.pred[ia]) == a.abnormal(a.truth[ia])
    correct_b = b.abnormal(b.pred[ib]) == b.abnormal(b.truth[ib])
    return {"ttest": t, "mcnemar": mcnemar_exact(correct_a.ravel(), correct_b.ravel())}


PAIRS = (("single_side", "paired"), ("paired", "paired_lsym"), ("single_side", "paired_lsym"))


def tests_markdown(tests: Mapping[str, Sequence[Mapping[str, Any]]], labels: Mapping[str, str]) -> str:
    """One line per compared pair of rows and run: Δ MAE, t, p (paired t) and b / c, p (McNemar, exact)."""
    lines = ["| A vs B | run | mean Δ abs. error A − B (SBR) | t | p (paired t) | McNemar: only A / only B correct "
             "| p (exact) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for pair, runs in tests.items():
        a, b = pair.split(" vs ")
        for test in runs:
            t, m = test["ttest"], test["mcnemar"]
            lines.append(f"| {labels[a]} vs {labels[b]} | {test['run']} | {t['mean_difference']:+.4f} "
                         f"| {t['t']:.2f} | {t['p']:.3g} | {m['only_a_correct']} / {m['only_b_correct']} "
                         f"| {m['p']:.3g} |")  # fmt: skip
    return "\n".join(lines)


def aggregate(settings: Settings, rows: Mapping[str, Row], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collect every completed row's metrics and predictions; write ``ablation.json`` and ``ablation.md``."""
    metrics: dict[str, list[dict]] = {name: [] for name in rows}
    data: dict[tuple[str, str], EvaluationData] = {}
    truths_cache: dict[str | None, dict] = {}
    for run, datalist, _seed in settings.runs:
        if datalist not in truths_cache:
            truths_cache[datalist] = load_truths(datalist_path(REPO, settings.common, datalist), "test",
                                                 settings.common.get("dataset_dir"))  # fmt: skip
        for name in rows:
            eval_dir = settings.out / run / name / "eval"
            if not (settings.out / run / name / "row.json").exists():
                continue
            metrics[name].append(json.loads((eval_dir / "metrics.json").read_text()))
            data[(run, name)] = pair_predictions(read_predictions(eval_dir / "predictions.csv"),
                                                 truths_cache[datalist])  # fmt: skip
    tests: dict[str, list[dict]] = {}
    for a, b in PAIRS:
        for run, _, _ in settings.runs:
            if (run, a) in data and (run, b) in data:
                tests.setdefault(f"{a} vs {b}", []).append({"run": run, **compare_rows(data[(run, a)],
                                                                                      data[(run, b)])})  # fmt: skip
    labels = {name: row.label for name, row in rows.items()}
    present = {name: runs for name, runs in metrics.items() if runs}
    result = {"rows": present, "tests": tests, "labels": labels, "records": list(records),
              "settings": {"configs": settings.configs, **settings.common, **settings.train,
                           "mc_samples": settings.mc_samples, "calibration": settings.calibrate,
                           "coverage": settings.coverage, "runs": [r for r, _, _ in settings.runs]}}  # fmt: skip
    write_json(settings.out / "ablation.json", json_safe(result))
    write_text(settings.out / "ablation.md", markdown(result))
    return result


def markdown(result: Mapping[str, Any]) -> str:
    rows, labels, settings = result["rows"], result["labels"], result["settings"]
    n = {name: runs[0]["n"] for name, runs in rows.items()}
    walls = [r["wall_s"] for r in result["records"]]
    per_row = ", ".join(f"{r['run']}/{r['row']} {r['wall_s'] / 60:.1f}" for r in result["records"])
    head = [
        "# Ablation: standard vs symmetric regressor",
        "",
        f"Runs: {', '.join(settings['runs'])} ({len(settings['runs'])} repeat(s); mean ± SD over them when more "
        f"than one). Test patients per run: {', '.join(f'{k} {v}' for k, v in n.items())}.",
        "Settings: " + ", ".join(f"`{k}` = {v}" for k, v in settings.items() if k != "runs") + ".",
        f"Hardware: {hardware()}. Wall time of the rows (as recorded when each ran): {sum(walls) / 60:.1f} min "
        f"({per_row}).",
        "",
        "## Table 3 shape: SBR prediction (SBR units)",
        "",
        table3_markdown(rows, labels),
        "",
        "## Table 4 shape: binary agreement (abnormal = SBR < 3.401 right / 3.345 left) and Lin's CCC",
        "",
        table4_markdown(rows, labels),
        "",
        "## Table 5 shape: interval quality (widths / sbr_max; optimal = closest to (1, 1))",
        "",
        table5_markdown(rows, labels),
        "",
        "Symmetric MC needs one paired model (eq. 9), so the single-side row has plain MC intervals only.",
        "",
        "## Paired tests between rows",
        "",
        "Student's paired t-test (scipy `ttest_rel`) on per-patient absolute errors (mean of the two sides); "
        "McNemar's exact test (binomial on the discordant pairs, scipy `binomtest`) on per-side normal/abnormal "
        "agreement with the truth, both sides pooled.",
        "",
        tests_markdown(result["tests"], labels) if result["tests"] else "(fewer than two rows complete)",
        "",
    ]
    return "\n".join(head)


# --- command line ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    rows = list(make_rows(0.04, 1.0))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablation", help="output folder (resumable)")
    parser.add_argument(
        "--rows",
        nargs="+",
        default=list(DEFAULT_ROWS),
        choices=rows,
        help="rows to run (default: the ablation rows; add Table 3's baselines by name)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="seeds seed .. seed + K - 1 (mean ± SD)")
    parser.add_argument("--datalist", nargs="+", default=None, help="datalist(s); several = repeats over folds")
    parser.add_argument("--alpha", type=float, default=0.04, help="margin of L_sym, row (c)")
    parser.add_argument("--beta", type=float, default=1.0, help="weight of L_sym, row (c)")
    parser.add_argument("--coverage", type=float, default=0.95, help="calibration target coverage")
    parser.add_argument("--no-calibration", action="store_true", help="skip calibration (gamma = 0.5, ±1.96 SD)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    common, train, mc_samples = common_settings(args, QUICK)
    datalists = args.datalist or [None]
    runs = []
    for datalist in datalists:
        fold = f"{Path(datalist).stem}_" if datalist and len(datalists) > 1 else ""
        runs += [(f"{fold}seed{args.seed + k}", datalist, args.seed + k) for k in range(args.repeats)]
    return Settings(out=args.out.resolve(), runs=runs, common=common, train=train, mc_samples=mc_samples,
                    coverage=args.coverage, calibrate=not args.no_calibration, configs=list(args.configs))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    settings = settings_from_args(args)
    all_rows = make_rows(args.alpha, args.beta)
    rows = {name: all_rows[name] for name in args.rows}
    runner = BundleRunner(REPO, extra_configs=args.configs, common=settings.common, env=thread_env(args))
    records = []
    start = time.perf_counter()
    for run, datalist, seed in settings.runs:
        for row in rows.values():
            records.append(run_row(runner, row, settings, run, datalist, seed))
            aggregate(settings, rows, records)  # the tables so far, after every row
    result = aggregate(settings, rows, records)
    logger.info("ablation done in %.1f min -> %s", (time.perf_counter() - start) / 60, settings.out / "ablation.md")
    return result


if __name__ == "__main__":
    main()
