"""Automatic vs annotated nigrosome-1 centroids on a cohort's test split (synthetic data; research use only).

Runs the bundle's own workflows and writes ``study.json``, ``study.md`` and ``study.png`` into ``--out``:

1. ``localise`` on the section: localisation error (mm) per side against the annotated centroids (median, 95th
   percentile, max), beside the predict-the-mean baseline (every case gets the training split's mean centroid); on
   a synthetic cohort also the localiser's and the annotation's distance to the true centre (``cohort.json``).
2. ``inference`` (deterministic, ``--mc-samples 0`` by default) with the annotated centroids, with the localiser's
   (``"centroid_space": "auto"``), and with the annotated centroids moved by 1, 2 and 4 voxels in a random
   direction (how precise the localiser must be): SBR MAE and Pearson R per run, averaged over the sides.
3. Refusals: ``localise`` on volumes without a midbrain (noise only, at the cohort's noise level) and with the right
   nigra blanked (a 15 mm ball replaced by tissue and noise), made from the first ``--refusal-cases`` cases: how many
   give the one-line low-confidence or implausibility error instead of centroids.

Usage (from the repository root, after training the regressor and the localiser)::

    python scripts/localisation_study.py [--dataset-dir data/demo_wide] [--ckpt models/model.pt] \\
        [--localiser models/localiser.pt] [--out runs/localisation_study]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from scipy.stats import pearsonr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments import hardware  # noqa: E402

from bundle.constants import SIDES  # noqa: E402
from bundle.evaluation.plots import save_png  # noqa: E402
from bundle.io import write_json, write_text  # noqa: E402
from bundle.localiser.centroids import voxel_to_world  # noqa: E402

JITTERS_VOX = (1, 2, 4)


def run_workflow(workflow: str, configs: list[str], **overrides) -> None:
    from monai.bundle import run

    run(workflow, config_file=[str(REPO / c) for c in configs], meta_file=str(REPO / "configs" / "metadata.json"),
        logging_file=str(REPO / "configs" / "logging.conf"), bundle_root=str(REPO), **overrides)  # fmt: skip


def world_centroids(case: dict, dataset_dir: Path) -> np.ndarray:
    """[2, 3] scanner RAS mm of a case's annotated centroids (right, left)."""
    points = np.array([case[f"centroid_{side}"] for side in SIDES], dtype=np.float64)
    if case.get("centroid_space", "voxel") == "world":
        return points
    return voxel_to_world(nib.load(dataset_dir / case["image"]).affine, points)


def true_centres(cases: list[dict], dataset_dir: Path) -> dict[str, np.ndarray] | None:
    """[2, 3] scanner RAS mm of each case's true nigrosome-1 centre, from a synthetic cohort's ``cohort.json``
    (None for other datalists): the annotations carry a simulated clicking error, the generator knows the truth."""
    record = dataset_dir / "cohort.json"
    if not record.is_file():
        return None
    patients = {p["id"]: p for p in json.loads(record.read_text()).get("patients", [])}
    if not all(c["id"] in patients and "nigrosome_right_voxel" in patients[c["id"]] for c in cases):
        return None
    out = {}
    for case in cases:
        voxels = np.array([patients[case["id"]][f"nigrosome_{side}_voxel"] for side in SIDES])
        out[case["id"]] = voxel_to_world(nib.load(dataset_dir / case["image"]).affine, voxels)
    return out


def found_centres(centroids_csv: Path) -> dict[str, np.ndarray]:
    """[2, 3] scanner RAS mm per case id from a ``centroids.csv``."""
    with open(centroids_csv) as handle:
        return {r["id"]: np.array([[float(r[f"{side}_{a}"]) for a in "xyz"] for side in SIDES])
                for r in csv.DictReader(handle)}  # fmt: skip


def distances(found: dict[str, np.ndarray], truths: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per side, the distance (mm) between ``found`` and ``truths`` over the ids of ``truths``."""
    return {side: np.array([np.linalg.norm(found[i][k] - truth[k]) for i, truth in truths.items()])
            for k, side in enumerate(SIDES)}  # fmt: skip


def summary(errors: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(errors)), "p95": float(np.percentile(errors, 95)), "max": float(errors.max())}


def sbr_agreement(predictions_csv: Path, cases: list[dict]) -> dict[str, float]:
    """MAE and Pearson R (average of the sides) of the predicted cases; how many cases failed."""
    with open(predictions_csv) as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    maes, rs = [], []
    for side in SIDES:
        pairs = [(float(rows[c["id"]][f"sbr_{side}"]), c[f"sbr_{side}"]) for c in cases if c["id"] in rows]
        pred, truth = np.array(pairs).T
        maes.append(float(np.mean(np.abs(pred - truth))))
        rs.append(float(pearsonr(pred, truth)[0]))
    return {"mae": float(np.mean(maes)), "r": float(np.mean(rs)), "n": len(rows), "failed": len(cases) - len(rows)}


def jittered(cases: list[dict], dataset_dir: Path, voxels: int, rng: np.random.Generator) -> list[dict]:
    """The cases with each annotated centroid moved by ``voxels`` voxels in a random direction (world space)."""
    out = []
    for case in cases:
        affine = nib.load(dataset_dir / case["image"]).affine
        moved = {}
        for k, side in enumerate(SIDES):
            direction = rng.normal(size=3)
            offset = affine[:3, :3] @ (voxels * direction / np.linalg.norm(direction))
            moved[f"centroid_{side}"] = (world_centroids(case, dataset_dir)[k] + offset).tolist()
        out.append({**case, **moved, "centroid_space": "world"})
    return out


def refusal_volumes(cases: list[dict], dataset_dir: Path, folder: Path) -> list[dict]:
    """Noise-only and right-blanked copies of ``cases`` as NIfTI files in ``folder``; returns their datalist cases."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for case in cases:
        image = nib.load(dataset_dir / case["image"])
        volume = np.asarray(image.dataobj, dtype=np.float32)
        tissue, noise = float(np.median(volume)), float(np.std(volume[:8, :8]))  # a corner: skull, noise only
        variants = {"noise": np.abs(rng.normal(0.3 * tissue, noise + 0.05 * tissue, volume.shape))}
        grid = np.stack(np.meshgrid(*(np.arange(n) for n in volume.shape), indexing="ij"), axis=-1)
        distance = np.linalg.norm((grid - np.asarray(case["centroid_right"])) * np.asarray(image.header.get_zooms()),
                                  axis=-1)  # fmt: skip
        blanked = volume.copy()
        ball = distance < 15.0
        blanked[ball] = rng.normal(tissue, 0.1 * tissue, int(ball.sum()))
        variants["right_blanked"] = blanked
        for name, array in variants.items():
            path = folder / f"{case['id']}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(array.astype(np.float32), image.affine), path)
            out.append({"id": f"{case['id']}_{name}", "image": str(path)})
    return out


def study_figure(errors: dict[str, dict[str, np.ndarray]], agreement: dict[str, dict[str, float]]) -> Figure:
    """Cumulative distributions of the localisation errors per side (targets 1 and 2 mm dashed), and the SBR MAE
    against the centroid jitter with the localiser's MAE as a line: how precise the centroids must be."""
    fig = Figure(figsize=(13.5, 4.2), dpi=120)
    axes = fig.subplots(1, 3)
    for ax, side in zip(axes[:2], SIDES, strict=True):
        for name, per_side in errors.items():
            values = np.sort(per_side[side])
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=name)
        for target in (1.0, 2.0):
            ax.axvline(target, color="0.5", linestyle="--", linewidth=0.8)
        ax.set(xlabel="distance (mm, log scale)", ylabel="fraction of test cases", title=f"{side} nigrosome-1",
               xscale="log", ylim=(0, 1.02))  # fmt: skip
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlim(0.1, max(float(e[side].max()) for e in errors.values()) * 1.2)
    axes[0].legend(fontsize=7.5, loc="lower right")
    jitter = [0, *JITTERS_VOX]
    maes = [agreement["annotated"]["mae"], *(agreement[f"annotated + {v} voxel jitter"]["mae"] for v in JITTERS_VOX)]
    axes[2].plot(jitter, maes, "o-", color="tab:gray", label="annotated centroids moved by n voxels")
    axes[2].axhline(agreement["localiser"]["mae"], color="tab:blue", linestyle="--", label="localiser's centroids")
    axes[2].set(xlabel="centroid jitter (voxels of the file, random direction)", ylabel="SBR MAE (SBR units)",
                title="SBR error against centroid error", xticks=jitter)  # fmt: skip
    axes[2].legend(fontsize=7.5)
    fig.text(0.5, 0.01, "Synthetic wide-field cohort, test split; research use only.", ha="center", fontsize=8.5)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset-dir", default=str(REPO / "data" / "demo_wide"))
    parser.add_argument(
        "--ckpt_path", "--ckpt", dest="ckpt", default=str(REPO / "models" / "model.pt"), help="the SBR regressor"
    )
    parser.add_argument("--localiser", default=str(REPO / "models" / "localiser.pt"))
    parser.add_argument("--section", default="test")
    parser.add_argument("--mc-samples", type=int, default=0, help="0: deterministic predictions (the point estimate)")
    parser.add_argument("--out", default=str(REPO / "runs" / "localisation_study"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter directions")
    parser.add_argument("--refusal-cases", type=int, default=10, help="cases made into noise-only / blanked volumes")
    args = parser.parse_args(argv)
    dataset_dir, out = Path(args.dataset_dir).resolve(), Path(args.out).resolve()
    datalist = json.loads((dataset_dir / "datalist.json").read_text())
    cases = datalist[args.section]
    truths = {c["id"]: world_centroids(c, dataset_dir) for c in cases}
    start = time.perf_counter()

    run_workflow("localise", ["configs/localise.json"], dataset_dir=str(dataset_dir), section=args.section,
                 localiser_path=args.localiser, output_dir=str(out / "localise"))  # fmt: skip
    located = found_centres(out / "localise" / "centroids.csv")
    mean = np.mean([world_centroids(c, dataset_dir) for c in datalist["training"]], axis=0)
    rows = {"localiser, against the annotation": distances(located, truths),
            "training mean, against the annotation": distances({i: mean for i in truths}, truths)}  # fmt: skip
    if (truth := true_centres(cases, dataset_dir)) is not None:
        rows |= {"localiser, against the true centre": distances(located, truth),
                 "annotation, against the true centre": distances(truths, truth)}  # fmt: skip

    variants = {"annotated": cases, "localiser": [{**c, "centroid_space": "auto"} for c in cases]}
    rng = np.random.default_rng(args.seed)
    variants |= {f"annotated + {v} voxel jitter": jittered(cases, dataset_dir, v, rng) for v in JITTERS_VOX}
    agreement = {}
    for name, variant in variants.items():
        folder = out / name.replace(" ", "_").replace("+", "plus")
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "datalist.json", json.dumps({args.section: variant}))
        run_workflow("inference", ["configs/inference.json"], dataset_dir=str(dataset_dir),
                     datalist=str(folder / "datalist.json"), section=args.section, ckpt_path=args.ckpt,
                     localiser_path=args.localiser, mc_samples=args.mc_samples, reports=False,
                     output_dir=str(folder))  # fmt: skip
        agreement[name] = sbr_agreement(folder / "predictions.csv", cases)

    refusals = refusal_volumes(cases[: args.refusal_cases], dataset_dir, out / "refusals" / "volumes")
    write_text(out / "refusals" / "datalist.json", json.dumps({"test": refusals}))
    run_workflow("localise", ["configs/localise.json"], dataset_dir=str(out / "refusals"),
                 datalist=str(out / "refusals" / "datalist.json"), section="test", localiser_path=args.localiser,
                 output_dir=str(out / "refusals" / "localise"))  # fmt: skip
    with open(out / "refusals" / "localise" / "errors.csv") as handle:
        refused = {r["id"]: r["error"] for r in csv.DictReader(handle)}
    refusal = {kind: {"refused": sum(r["id"].endswith(kind) and r["id"] in refused for r in refusals),
                      "of": sum(r["id"].endswith(kind) for r in refusals),
                      "messages": sorted({refused[r["id"]].split(": ", 2)[-1] for r in refusals
                                          if r["id"].endswith(kind) and r["id"] in refused})[:3]}
               for kind in ("noise", "right_blanked")}  # fmt: skip

    result = {
        "dataset_dir": str(dataset_dir), "section": args.section, "n": len(cases), "hardware": hardware(),
        "wall_s": round(time.perf_counter() - start, 1),
        "localisation_mm": {name: {side: summary(e[side]) for side in SIDES} for name, e in rows.items()},
        "sbr": agreement,
        "refusals": refusal,
    }  # fmt: skip
    write_json(out / "study.json", result)
    save_png(study_figure(rows, agreement), out / "study.png")
    lines = ["| centroids | distance median / p95 / max (mm), right | left |",
             "| --- | --- | --- |"]  # fmt: skip
    for label, stats in result["localisation_mm"].items():
        cells = [f"{stats[s]['median']:.2f} / {stats[s]['p95']:.2f} / {stats[s]['max']:.2f}" for s in SIDES]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += ["", "| centroids used | SBR MAE | R | cases predicted |", "| --- | --- | --- | --- |"]
    for name, a in agreement.items():
        lines.append(f"| {name} | {a['mae']:.3f} | {a['r']:.3f} | {a['n']} of {len(cases)} |")
    lines += ["", "| volume | refused (one-line error) |", "| --- | --- |"]
    for kind, counts in refusal.items():
        lines.append(f"| {kind.replace('_', ' ')} | {counts['refused']} of {counts['of']} |")
    write_text(out / "study.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'study.json'}, {out / 'study.md'}, {out / 'study.png'} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
