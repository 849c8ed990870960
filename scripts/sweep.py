"""α and β sweep of the symmetric loss (paper Fig. 3), judged on the validation split.

Stage 1 trains the paired model with L_sym for every α of ``--alphas`` (β = ``--beta-for-alpha``); stage 2 trains
it for every β of ``--betas`` with α fixed at the stage-1 value of lowest validation MAE (as in the paper: "α =
0.04, decided previously"), or at ``--alpha-for-beta``. Each grid point is the bundle's training workflow
followed by deterministic evaluations (dropout off) of its best checkpoint on the validation and the test split
(``configs/evaluate.json``). The choice uses validation MAE only; test MAE is recorded for the plots, as in the
paper's Fig. 3, which shows the test set.

Writes ``{out}/sweep.csv`` (one line per grid point), ``{out}/sweep_alpha.png`` and ``{out}/sweep_beta.png``.
Resumable: a grid point whose ``point.json`` exists is not run again.

Usage (from the repository root)::

    python scripts/sweep.py --quick                 # 3 α and 3 β values, tiny network, few epochs
    python scripts/sweep.py                         # configs/demo.json, the default grids
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments import BundleRunner, add_common_arguments, common_settings, hardware, thread_env  # noqa: E402

from bundle.evaluation.plots import save_png  # noqa: E402
from bundle.io import write_csv, write_json  # noqa: E402

logger = logging.getLogger("sweep")

ALPHAS = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16)
"""Margins in normalised SBR units (Fig. 3 left; the paper's optimum is 0.04)."""
BETAS = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Weights of L_sym (Fig. 3 right, log axis)."""
QUICK = {"channels": [8, 16, 32, 64], "epochs": 3, "mc_samples": 0, "alphas": (0.0, 0.04, 0.16),
         "betas": (0.1, 1.0, 10.0)}  # fmt: skip
COLUMNS = ("stage", "alpha", "beta", "seed", "val_mae", "val_mae_right", "val_mae_left", "val_rmse", "val_r",
           "test_mae", "test_rmse", "test_r", "wall_s")  # fmt: skip


def point_name(alpha: float, beta: float) -> str:
    return f"alpha{alpha:g}_beta{beta:g}"


def run_point(runner: BundleRunner, out: Path, alpha: float, beta: float, seed: int, train: Mapping[str, Any],
              stage: str) -> dict[str, Any]:  # fmt: skip
    """Train with (alpha, beta) and evaluate on validation and test; skipped when ``point.json`` exists."""
    folder = out / point_name(alpha, beta)
    done = folder / "point.json"
    if done.exists():
        return json.loads(done.read_text())
    ckpt = folder / "model.pt"
    wall = runner.run("training", [],
                      {**train, "alpha": alpha, "beta": beta, "seed": seed, "ckpt_path": str(ckpt),
                       "output_dir": str(folder / "train")}, folder / "train.done.json")  # fmt: skip
    metrics = {}
    for section in ("validation", "test"):
        wall += runner.run("evaluating", [],
                           {"section": section, "mc_samples": 0, "figures": False, "seed": seed,
                            "ckpt_path": str(ckpt), "output_dir": str(folder / section)},
                           folder / section / "metrics.json")  # fmt: skip
        metrics[section] = json.loads((folder / section / "metrics.json").read_text())["table3"]
    val, test = metrics["validation"], metrics["test"]
    record = {"stage": stage, "alpha": alpha, "beta": beta, "seed": seed,
              "val_mae": val["avg"]["mae"], "val_mae_right": val["right"]["mae"], "val_mae_left": val["left"]["mae"],
              "val_rmse": val["avg"]["rmse"], "val_r": val["avg"]["r"],
              "test_mae": test["avg"]["mae"], "test_rmse": test["avg"]["rmse"], "test_r": test["avg"]["r"],
              "wall_s": round(wall, 1)}  # fmt: skip
    write_json(done, record)
    return record


def best(records: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any]:
    """The record of lowest validation MAE (the first on ties)."""
    return min(records, key=lambda r: (r["val_mae"], r[key]))


def dependency_plot(records: Sequence[Mapping[str, Any]], key: str, chosen: float, title: str, log_x: bool) -> Figure:
    """MAE (validation, test) against ``key`` (alpha or beta), chosen value marked (Fig. 3)."""
    records = sorted(records, key=lambda r: r[key])
    x = np.array([r[key] for r in records], dtype=float)
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    other = "beta" if key == "alpha" else "alpha"
    greek = {"alpha": "α", "beta": "β"}
    fig.text(0.5, 0.015, f"MAE (mean of the sides, SBR units) of the best-validation checkpoint vs {greek[key]}; "
                         f"{greek[other]} = {records[0][other]:g}.\nChosen on the validation split: "
                         f"{greek[key]} = {chosen:g}.", ha="center", va="bottom", fontsize=8, color="0.2")  # fmt: skip
    ax = fig.add_axes((0.13, 0.2, 0.82, 0.7))
    ax.plot(x, [r["val_mae"] for r in records], "o-", label="validation (selects)")
    ax.plot(x, [r["test_mae"] for r in records], "s--", label="test")
    ax.axvline(chosen, color="tab:red", ls=":", lw=1, label=f"chosen {greek[key]} = {chosen:g}")
    if log_x:
        ax.set_xscale("log")
    label = "α (margin, normalised SBR units)" if key == "alpha" else "β (weight of L_sym, log scale)"
    ax.set(xlabel=label, ylabel="MAE (SBR)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sweep", help="output folder (resumable)")
    parser.add_argument("--alphas", type=float, nargs="+", default=None, help=f"default {ALPHAS}")
    parser.add_argument("--betas", type=float, nargs="+", default=None, help=f"default {BETAS}")
    parser.add_argument("--beta-for-alpha", type=float, default=1.0, help="β during the α sweep")
    parser.add_argument("--alpha-for-beta", type=float, default=None, help="α during the β sweep (default: best)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    common, train, _ = common_settings(args, QUICK)
    alphas = args.alphas or (QUICK["alphas"] if args.quick else ALPHAS)
    betas = args.betas or (QUICK["betas"] if args.quick else BETAS)
    out = args.out.resolve()
    runner = BundleRunner(REPO, extra_configs=args.configs, common=common, env=thread_env(args))
    start = time.perf_counter()
    alpha_records = [run_point(runner, out, a, args.beta_for_alpha, args.seed, train, "alpha") for a in alphas]
    alpha_star = args.alpha_for_beta if args.alpha_for_beta is not None else best(alpha_records, "alpha")["alpha"]
    write_csv(out / "sweep.csv", COLUMNS, alpha_records)
    beta_records = [run_point(runner, out, alpha_star, b, args.seed, train, "beta") for b in betas]
    for record in beta_records:
        record["stage"] = "beta"
    records = alpha_records + beta_records
    write_csv(out / "sweep.csv", COLUMNS, records)
    beta_star = best(beta_records, "beta")["beta"]
    save_png(dependency_plot(alpha_records, "alpha", alpha_star, "Dependency on the clipping margin α", False),
             out / "sweep_alpha.png")  # fmt: skip
    save_png(dependency_plot(beta_records, "beta", beta_star, "Dependency on the weight β", True),
             out / "sweep_beta.png")  # fmt: skip
    summary = {"alpha": alpha_star, "beta": beta_star, "hardware": hardware(), "settings": {**common, **train},
               "wall_min_this_call": round((time.perf_counter() - start) / 60, 1)}  # fmt: skip
    write_json(out / "sweep.json", summary)
    logger.info("chosen on validation: alpha = %g, beta = %g -> %s", alpha_star, beta_star, out / "sweep.csv")
    return records


if __name__ == "__main__":
    main()
