"""Multi-center study on the multi-site synthetic cohort: local-only, pooled, leave-one-site-out (and federated).

Designs (each trained with the bundle's own ``training`` workflow, calibrated on its own validation cases with the
``calibrate`` workflow, then run with the ``inference`` workflow; per-site metrics from ``predictions.csv``):

- ``local``    one model per site, trained and calibrated on that site only; tested on every site's test split;
- ``pooled``   one model on all sites' training cases (a central data lake: what federation tries to approach);
- ``loso``     leave one site out: trained and calibrated on the other K - 1 sites (their training and validation
               cases; their test cases stay unused), tested on *all* cases of the
               held-out site (external validation); then the held-out site recalibrates on n of its own cases
               (split-conformal scale of the stored intervals, both sides' scores) and the coverage is measured
               on its remaining cases, over ``--draws`` random draws per n;
- ``federated`` the global model of ``python -m apps.federated`` (``--federated-model``), calibrated on the pooled
               validation cases (in a real federation only the conformal scores would travel) and tested like
               ``pooled``.

Per site: MAE, Pearson R, Lin's CCC (the mean of both sides), Table-4 accuracy (normal/abnormal), coverage and
sharpness of the calibrated symmetric intervals. Results: ``{out}/multicenter.json``, ``{out}/multicenter.md`` and,
with ``--figures DIR``, per-site MAE bars and held-out coverage before/after recalibration. Every step is skipped
when its output exists, so re-running resumes. Synthetic data, research use only.

Usage (from the repository root)::

    python scripts/make_demo_cohort.py --multisite --out data/multisite
    python scripts/multicenter.py --cohort data/multisite --out runs/multicenter --designs pooled local loso
    python scripts/multicenter.py --cohort data/multisite --out runs/multicenter --designs federated \\
        --federated-model runs/federated/model.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments import BundleRunner, add_common_arguments, common_settings, hardware, thread_env  # noqa: E402

from bundle.evaluation.predictions import load_truths, pair_predictions, read_predictions  # noqa: E402
from bundle.evaluation.tables import compute_metrics, json_safe  # noqa: E402
from bundle.io import write_json, write_text  # noqa: E402
from bundle.method.uncertainty import conformal_scale  # noqa: E402

logger = logging.getLogger("multicenter")

QUICK = {"channels": [4, 8, 16, 32], "epochs": 2, "mc_samples": 20}
"""``--quick``: a smoke run of every step (minutes on 2 cores), not a comparison."""
DESIGNS = ("local", "pooled", "loso", "federated")
RECALIBRATION_SIZES = (5, 10, 15, 20, 30)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def site_names(cohort: Path) -> list[str]:
    """The sites of the cohort, in generation order."""
    return [site["name"] for site in read_json(cohort / "cohort.json")["sites"]]


def write_datalist(path: Path, sections: Mapping[str, list[dict]]) -> Path:
    """Write a derived datalist once (kept if it exists, so a resumed run uses the same file)."""
    if not path.exists():
        write_json(path, dict(sections))
    return path


def loso_datalist(cohort: Path, held_out: str, out: Path) -> tuple[Path, Path]:
    """(training datalist of the other sites, test datalist of every case of ``held_out``), both relative to the
    cohort folder."""
    pooled = read_json(cohort / "datalist.json")
    train = {name: [c for c in cases if c["site"] != held_out] for name, cases in pooled.items()}
    train["test"] = []
    external = {"test": [c for cases in pooled.values() for c in cases if c["site"] == held_out]}
    return write_datalist(out / "train_datalist.json", train), write_datalist(out / "external.json", external)


def train_and_calibrate(runner: BundleRunner, folder: Path, data: Mapping[str, str], train: Mapping[str, Any],
                        mc: Mapping[str, Any], seed: int) -> Path:  # fmt: skip
    """Training then calibration (validation section of ``data``) into ``folder``; returns the model path."""
    ckpt = folder / "model.pt"
    overrides = {**train, **data, "seed": seed, "output_dir": str(folder / "train"), "ckpt_path": str(ckpt)}
    if (folder / "train" / "checkpoints").is_dir() and not (folder / "train.done.json").exists():
        overrides["resume"] = True
    runner.run("training", (), overrides, folder / "train.done.json")
    try:
        runner.run("calibrate", (), {**mc, **data, "ckpt_path": str(ckpt)}, folder / "calibration.json")
    except RuntimeError as err:  # a small site: too few validation cases for a conformal guarantee
        reason = [line for line in (folder / "calibrate.log").read_text(errors="replace").splitlines()
                  if line.startswith("ValueError:") and "too few" in line]  # fmt: skip
        if not reason:
            raise err
        logger.warning("%s: not calibrated (%s); uncalibrated +-1.96 SD intervals", folder.name, reason[-1][12:])
    return ckpt


def infer(runner: BundleRunner, ckpt: Path, data: Mapping[str, str], folder: Path, mc: Mapping[str, Any]) -> Path:
    """Calibrated symmetric MC inference on the ``test`` section of ``data``; returns ``predictions.csv``."""
    out = folder / "predictions.csv"
    runner.run("inference", (), {**mc, **data, "ckpt_path": str(ckpt), "output_dir": str(folder),
                                 "reports": False, "section": "test"}, out)  # fmt: skip
    return out


def per_site_metrics(predictions: Path, datalist: Path, cohort: Path, calibration: Path) -> dict[str, dict]:
    """Metrics of each site's cases in ``predictions`` (site = the id's prefix), with the model's gammas (0.5 and
    uncalibrated intervals when the model has no ``calibration.json``)."""
    cal = read_json(calibration) if calibration.is_file() else {"gamma_r": 0.5, "gamma_l": 0.5}
    preds = read_predictions(predictions)
    truths = load_truths(datalist, "test", cohort)
    sites = sorted({i.split("-")[0] for i in truths})
    result = {}
    for site in sites:
        data = pair_predictions(preds, {i: t for i, t in truths.items() if i.startswith(f"{site}-")})
        if data.n < 3:
            logger.warning("%s: %d test patient(s), too few for R and CCC; no metrics", site, data.n)
            continue
        m = compute_metrics(data, cal["gamma_r"], cal["gamma_l"])
        result[site] = {
            "n": m["n"], "mae": m["table3"]["avg"]["mae"], "r": m["table3"]["avg"]["r"],
            "ccc": m["agreement"]["avg"]["ccc"], "accuracy": m["table4"]["avg"]["accuracy"],
            "coverage": m["intervals"]["avg"]["cp"], "sharpness": m["intervals"]["avg"]["sharpness"],
            "mean_width": m["intervals"]["avg"]["mean_width"], "calibrated": calibration.is_file(),
        }  # fmt: skip
    return result


def recalibration_curve(predictions: Path, datalist: Path, cohort: Path, coverage: float, draws: int,
                        seed: int) -> dict[str, Any]:  # fmt: skip
    """Coverage at the held-out site after a local split-conformal rescaling of its intervals on n of its cases.

    For each n: ``draws`` random sets of n patients; the scale c is the conformal quantile of the scores
    |y - yhat| / half-width of both sides of those patients (:func:`bundle.method.uncertainty.conformal_scale`);
    the coverage of yhat +- c x half-width is measured on the site's other patients. n whose 2n scores are too few
    for ``coverage`` give no finite scale and are reported as such."""
    data = pair_predictions(read_predictions(predictions), load_truths(datalist, "test", cohort))
    half = (data.high - data.low) / 2.0
    rng = np.random.default_rng(seed)
    curve: dict[str, Any] = {"before": float(np.mean(np.abs(data.truth - data.pred) <= half)), "n": {}}
    for n in RECALIBRATION_SIZES:
        if n >= data.n - 2:
            continue
        covered, widths, infinite = [], [], 0
        for _ in range(draws):
            chosen = np.zeros(data.n, bool)
            chosen[rng.choice(data.n, n, replace=False)] = True
            scale = conformal_scale(data.truth[chosen], data.pred[chosen], half[chosen], coverage)
            if not np.isfinite(scale):
                infinite += 1
                continue
            rest = ~chosen
            covered.append(float(np.mean(np.abs(data.truth[rest] - data.pred[rest]) <= scale * half[rest])))
            widths.append(float(np.mean(2 * scale * half[rest])))
        curve["n"][str(n)] = {
            "coverage_mean": float(np.mean(covered)) if covered else None,
            "coverage_p10": float(np.percentile(covered, 10)) if covered else None,
            "mean_width": float(np.mean(widths)) if widths else None,
            "draws_without_finite_scale": infinite,
        }
    return curve


def run(args: argparse.Namespace) -> dict[str, Any]:
    cohort = Path(args.cohort).resolve()
    out = Path(args.out).resolve()
    common, train, mc_samples = common_settings(args, QUICK)
    runner = BundleRunner(REPO, tuple(args.configs), common, thread_env(args))
    mc = {"mc_samples": mc_samples, "seed": args.seed}
    pooled_data = {"dataset_dir": str(cohort), "datalist": str(cohort / "datalist.json")}
    sites = site_names(cohort)
    results: dict[str, Any] = {"cohort": str(cohort), "sites": sites, "seed": args.seed, "hardware": hardware(),
                               "configs": list(args.configs), "overrides": {**common, **train}}  # fmt: skip
    path = out / "multicenter.json"
    if path.exists():
        results = {**read_json(path), **{k: results[k] for k in ("hardware",)}}

    def evaluate_on_pooled_test(name: str, ckpt: Path, calibration: Path) -> None:
        predictions = infer(runner, ckpt, pooled_data, out / name / "test", mc)
        results.setdefault("designs", {})[name] = per_site_metrics(
            predictions, cohort / "datalist.json", cohort, calibration
        )
        write_json(path, json_safe(results))

    for design in args.designs:
        if design == "pooled":
            ckpt = train_and_calibrate(runner, out / "pooled", pooled_data, train, mc, args.seed)
            evaluate_on_pooled_test("pooled", ckpt, out / "pooled" / "calibration.json")
        elif design == "federated":
            if not args.federated_model:
                raise SystemExit("error: --designs federated needs --federated-model (the global model.pt)")
            folder = out / "federated"
            folder.mkdir(parents=True, exist_ok=True)
            ckpt = Path(args.federated_model).resolve()
            calibration = folder / "calibration.json"
            runner.run("calibrate", (), {**mc, **pooled_data, "ckpt_path": str(ckpt), "output_dir": str(folder)},
                       calibration)  # fmt: skip
            predictions = infer(runner, ckpt, {**pooled_data, "calibration_file": str(calibration)},
                                folder / "test", mc)  # fmt: skip
            results.setdefault("designs", {})["federated"] = per_site_metrics(
                predictions, cohort / "datalist.json", cohort, calibration
            )
            write_json(path, json_safe(results))
        elif design == "local":
            local: dict[str, Any] = {}
            for site in sites:
                data = {"dataset_dir": str(cohort / site), "datalist": str(cohort / site / "datalist.json")}
                ckpt = train_and_calibrate(runner, out / "local" / site, data, train, mc, args.seed)
                predictions = infer(runner, ckpt, pooled_data, out / "local" / site / "test", mc)
                local[site] = per_site_metrics(
                    predictions, cohort / "datalist.json", cohort, out / "local" / site / "calibration.json"
                )
                results.setdefault("designs", {})["local"] = local
                write_json(path, json_safe(results))
        elif design == "loso":
            loso: dict[str, Any] = {}
            for site in sites:
                folder = out / "loso" / site
                folder.mkdir(parents=True, exist_ok=True)
                train_list, external = loso_datalist(cohort, site, folder)
                data = {"dataset_dir": str(cohort), "datalist": str(train_list)}
                ckpt = train_and_calibrate(runner, folder, data, train, mc, args.seed)
                predictions = infer(runner, ckpt, {**data, "datalist": str(external)}, folder / "external", mc)
                calibration = folder / "calibration.json"
                loso[site] = {
                    **per_site_metrics(predictions, external, cohort, calibration)[site],
                    "calibration_validation_coverage": _validation_coverage(calibration),
                    "recalibration": recalibration_curve(
                        predictions, external, cohort, args.coverage, args.draws, args.seed
                    ),  # fmt: skip
                }
                results.setdefault("designs", {})["loso"] = loso
                write_json(path, json_safe(results))
    write_text(out / "multicenter.md", markdown(results))
    if args.figures:
        figures(results, Path(args.figures))
    return results


def _validation_coverage(calibration: Path) -> float:
    """Mean of both sides' validation coverage of the symmetric mode, as ``calibration.json`` records it."""
    if not calibration.is_file():
        return float("nan")
    cal = read_json(calibration)
    sym = cal.get("modes", {}).get("symmetric", cal)
    values = [sym.get(f"validation_coverage_{s}") for s in "rl"]
    return float(np.mean(values)) if None not in values else float("nan")


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown(results: Mapping[str, Any]) -> str:
    """The study's tables (markdown), one per design, per site."""
    sites, designs = results["sites"], results.get("designs", {})
    lines = ["# Multi-center study (synthetic multi-site cohort; research use only)", "",
             f"Hardware: {results['hardware']}; seed {results['seed']}; configs {results['configs']}; "
             f"overrides {results['overrides']}.", ""]  # fmt: skip
    keys = ("mae", "r", "ccc", "accuracy", "coverage", "sharpness")
    header = "| model | test site | n | MAE | R | CCC | Table-4 accuracy | coverage | sharpness |"
    rule = "|---|---|---|---|---|---|---|---|---|"
    rows = []
    for name in ("pooled", "federated"):
        for site, m in designs.get(name, {}).items():
            rows.append(f"| {name} | {site} | {m['n']} | " + " | ".join(_f(m[k]) for k in keys) + " |")
    for train_site, per_site in designs.get("local", {}).items():
        for site, m in per_site.items():
            label = "own" if site == train_site else "other"
            rows.append(f"| local {train_site} | {site} ({label}) | {m['n']} | "
                        + " | ".join(_f(m[k]) for k in keys) + " |")  # fmt: skip
    summary = _summary_rows(designs, sites)
    if summary:
        lines += ["## Test MAE per site: local-only (each site's own model) vs pooled vs federated", "",
                  "| model | " + " | ".join(sites) + " | all test patients |", "|---|" + "---|" * (len(sites) + 1),
                  *summary, ""]  # fmt: skip
    if rows:
        lines += ["## Every model on every site's test split", "", header, rule, *rows, ""]
    if "loso" in designs:
        lines += ["## Leave one site out (all cases of the held-out site)", "",
                  "| held-out site | n | MAE | R | CCC | Table-4 accuracy | coverage | sharpness | "
                  "coverage on the training sites' validation |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for site, m in designs["loso"].items():
            lines.append(f"| {site} | {m['n']} | " + " | ".join(_f(m[k]) for k in keys)
                         + f" | {_f(m['calibration_validation_coverage'])} |")  # fmt: skip
        lines += ["", "### Local recalibration at the held-out site (split-conformal, n of its patients)", "",
                  "| held-out site | before | " + " | ".join(f"n = {n}" for n in RECALIBRATION_SIZES) + " |",
                  "|---|---|" + "---|" * len(RECALIBRATION_SIZES)]  # fmt: skip
        for site, m in designs["loso"].items():
            cells = [_f((m["recalibration"]["n"].get(str(n)) or {}).get("coverage_mean")) for n in RECALIBRATION_SIZES]
            lines.append(f"| {site} | {_f(m['recalibration']['before'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _summary_rows(designs: Mapping[str, Any], sites: Sequence[str]) -> list[str]:
    """One row per design: MAE at each site and over all test patients (the sites weighted by their n)."""
    per_design = {}
    if "local" in designs:
        per_design["local-only (own site's model)"] = {s: designs["local"].get(s, {}).get(s) for s in sites}
    for name in ("pooled", "federated"):
        if name in designs:
            per_design[name] = {s: designs[name].get(s) for s in sites}
    rows = []
    for name, per_site in per_design.items():
        known = [m for m in per_site.values() if m]
        total = sum(m["n"] for m in known)
        overall = sum(m["mae"] * m["n"] for m in known) / total if total else None
        cells = [_f(m["mae"]) if m else "—" for m in per_site.values()]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {_f(overall)} |")
    return rows


def figures(results: Mapping[str, Any], folder: Path) -> None:
    """Per-site MAE bars (local / pooled / federated / held out) and held-out coverage before/after recalibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bundle.evaluation.plots import save_png

    designs, sites = results.get("designs", {}), results["sites"]
    bars: dict[str, list[float]] = {}
    if "local" in designs:
        bars["local (own site)"] = [designs["local"].get(s, {}).get(s, {}).get("mae", np.nan) for s in sites]
    for name in ("pooled", "federated"):
        if name in designs:
            bars[name] = [designs[name].get(s, {}).get("mae", np.nan) for s in sites]
    if "loso" in designs:
        bars["held out (LOSO)"] = [designs["loso"].get(s, {}).get("mae", np.nan) for s in sites]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(bars), 1)
    for k, (label, values) in enumerate(bars.items()):
        axes[0].bar(np.arange(len(sites)) + k * width, values, width, label=label)
    axes[0].set_xticks(np.arange(len(sites)) + 0.4 - width / 2, sites)
    axes[0].set_ylabel("MAE (SBR)")
    axes[0].set_title("Test MAE per site")
    axes[0].legend(fontsize=8)
    if "loso" in designs:
        for site in sites:
            rec = designs["loso"].get(site, {}).get("recalibration")
            if not rec:
                continue
            ns = [int(n) for n, v in rec["n"].items() if v["coverage_mean"] is not None]
            axes[1].plot([0, *ns], [rec["before"], *[rec["n"][str(n)]["coverage_mean"] for n in ns]], "o-",
                         label=site)  # fmt: skip
        axes[1].axhline(0.95, color="grey", ls="--", lw=1, label="nominal 95 %")
        axes[1].set_xlabel("local patients used to recalibrate (0 = as shipped)")
        axes[1].set_ylabel("coverage at the held-out site")
        axes[1].set_title("Held-out site coverage")
        axes[1].legend(fontsize=8)
    fig.suptitle("Synthetic multi-site cohort — research use only", fontsize=9)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    save_png(fig, folder / "multicenter.png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--cohort", default=str(REPO / "data" / "multisite"), help="the multi-site cohort folder")
    parser.add_argument("--out", default=str(REPO / "runs" / "multicenter"), help="output folder (resumable)")
    parser.add_argument("--designs", nargs="+", choices=DESIGNS, default=["pooled", "local", "loso"])
    parser.add_argument("--federated-model", default=None, help="global model.pt of the federated job")
    parser.add_argument("--coverage", type=float, default=0.95, help="nominal coverage of the intervals")
    parser.add_argument("--draws", type=int, default=200, help="random draws per n in the recalibration curve")
    parser.add_argument("--figures", default=None, help="folder for multicenter.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (Path(args.cohort) / "cohort.json").is_file():
        parser.exit(2, f"error: {args.cohort}: no multi-site cohort (make it with make_demo_cohort.py --multisite)\n")
    try:
        run(args)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        parser.exit(1, f"error: {err}\n")


if __name__ == "__main__":
    main()
