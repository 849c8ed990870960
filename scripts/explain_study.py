"""Measure where the explanation maps point, on the synthetic cohort whose structures are known (research use only).

For each model (the symmetric regressor, and optionally a standard single-side regressor of one side) the
``explain`` step writes every method's maps of the section's cases; the cohort's nigrosome-1, nigra and red-nucleus
masks, rendered again from the recorded seed, are taken to each patch's grid through the saved affines, and per
method and structure the enrichment ratio (share of positive evidence inside / share of the patch) and the pointing
game (the map's maximum inside the nigrosome or nigra) are reported. Then the penultimate features of each model
(the standard model's side only, or both sides) go through a 2D t-SNE (the paper's Fig. 5) with two numbers of how
well the embedding orders the SBR. Writes study.json, study.md, study.png and tsne.png.

Usage (from the repository root)::

    python scripts/explain_study.py --ckpt models/model.pt --standard-ckpt models/single_left.pt \\
        --standard-side left --dataset-dir data/demo --out runs/explain_study
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle.constants import DEFAULT_SBR_MAX, SIDES  # noqa: E402
from bundle.io import write_json, write_text  # noqa: E402

STRUCTURES = ("nigrosome", "nigra", "red_nucleus")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt_path", "--ckpt", dest="ckpt", default=str(REPO / "models" / "model.pt"), help="the symmetric regressor"
    )
    parser.add_argument("--standard-ckpt", help="a single-side (standard) regressor to compare with")
    parser.add_argument("--standard-side", choices=SIDES, default="left", help="the side it was trained on")
    parser.add_argument("--dataset-dir", default=str(REPO / "data" / "demo"))
    parser.add_argument("--section", default="test")
    parser.add_argument("--n-cases", type=int, default=0, help="first N cases of the section (0: all)")
    parser.add_argument("--out", default=str(REPO / "runs" / "explain_study"))
    return parser.parse_args(argv)


def build_network(ckpt: Path):
    """The regressor F that ``ckpt`` records, with its weights, float32 on the CPU."""
    from bundle.method.networks import VGGRegressor3D
    from bundle.workflows.checkpoints import read_checkpoint

    trained = read_checkpoint(ckpt)
    record = {k: v for k, v in trained.network.items() if k != "in_channels"}
    return trained.load_into(VGGRegressor3D(**record), "cpu").float().eval(), record.get("patch_size")


def patch_masks(volume_masks: dict[str, np.ndarray], volume_affine: np.ndarray, patch_affine: np.ndarray,
                shape: tuple[int, ...], side: str) -> dict[str, np.ndarray]:  # fmt: skip
    """The side's structure masks on a patch grid (nearest voxel of the volume through both affines)."""
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    to_volume = np.linalg.inv(volume_affine) @ patch_affine
    index = np.rint(grid @ to_volume[:3, :3].T + to_volume[:3, 3]).astype(int)
    bounds = np.asarray(next(iter(volume_masks.values())).shape)
    valid = np.all((index >= 0) & (index < bounds), axis=1)
    out = {}
    for structure in STRUCTURES:
        mask = np.zeros(len(grid), dtype=bool)
        volume = volume_masks[f"{structure}_{side}"]
        mask[valid] = volume[tuple(index[valid].T)]
        out[structure] = mask.reshape(shape)
    return out


def measure(run_dir: Path, cases: list[dict], dataset_dir: Path, sides: tuple[str, ...], methods: list[str]) -> list:
    """One record per case, side and method: enrichment per structure and the pointing-game hit."""
    import nibabel as nib

    from bundle.explain.measures import enrichment_ratio, pointing_hit
    from bundle.io import safe_file_stem
    from bundle.synthetic.smwi_cohort import structure_masks

    records = []
    for case in cases:
        folder = run_dir / safe_file_stem(str(case["id"]))
        if not folder.is_dir():
            continue
        masks, affine = structure_masks(dataset_dir, str(case["id"]))
        for side in sides:
            for method in methods:
                saved = nib.load(folder / f"{method}_{side}.nii.gz")
                saliency = np.asarray(saved.dataobj)
                on_patch = patch_masks(masks, affine, saved.affine, saliency.shape, side)
                record = {"id": case["id"], "side": side, "method": method,
                          "pointing": pointing_hit(saliency, on_patch["nigrosome"] | on_patch["nigra"])}  # fmt: skip
                record |= {s: enrichment_ratio(saliency, on_patch[s]) for s in STRUCTURES}
                record["nigrosome_abs"] = enrichment_ratio(np.abs(saliency), on_patch["nigrosome"])
                records.append(record)
    return records


def summarise(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per method: mean and median enrichment per structure, pointing-game hit rate, number of maps."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        summary: dict[str, float] = {"n_maps": len(rows), "pointing": float(np.mean([r["pointing"] for r in rows]))}
        for s in STRUCTURES:
            values = np.array([r[s] for r in rows], dtype=float)
            summary[f"{s}_mean"] = float(np.nanmean(values))
            summary[f"{s}_median"] = float(np.nanmedian(values))
        summary["nigrosome_abs_mean"] = float(np.nanmean([r["nigrosome_abs"] for r in rows]))
        out[method] = summary
    return out


def penultimate_features(network, load, cases: list[dict], sides: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The flattened convolutional features (the linear head's input) of each case's ``sides`` patches, and the true
    SBRs (normalised)."""
    import torch

    features, truths = [], []
    for case in cases:
        data = load(dict(case))
        for side in sides:
            with torch.no_grad():
                features.append(network.features(data[f"patch_{side}"].as_tensor().float()[None])[0].numpy())
            truths.append(float(data["label"][SIDES.index(side)]))
    return np.stack(features), np.asarray(truths)


def tsne_study(embeddings: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> dict[str, dict[str, float]]:
    """2D t-SNE (scikit-learn) of each model's features, scatter coloured by the true SBR, and the ordering numbers."""
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    from bundle.explain.measures import embedding_order

    fig = Figure(figsize=(5 * len(embeddings), 4.2), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(embeddings)))
    scores = {}
    for ax, (name, (features, truths)) in zip(axes, embeddings.items(), strict=True):
        perplexity = min(30.0, (len(truths) - 1) / 3)
        embedded = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(features)
        sbr = truths * DEFAULT_SBR_MAX
        scores[name] = embedding_order(embedded, sbr)
        shown = ax.scatter(embedded[:, 0], embedded[:, 1], c=sbr, cmap="viridis", s=18)
        ax.set_title(f"{name}: Spearman {scores[name]['spearman_axis']:.2f}, k-NN R2 {scores[name]['knn_r2']:.2f}",
                     fontsize=9)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes.tolist(), label="true striatal SBR")
    fig.suptitle("t-SNE of the penultimate features, test split (synthetic cohort; research use only)", fontsize=9)
    fig.savefig(path)
    return scores


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| model | sides | method | nigrosome-1 | nigra | red nucleus | nigrosome-1, abs. evidence | pointing game |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in result["models"].items():
        for method, s in run["summary"].items():
            cells = " | ".join(f"{s[f'{x}_mean']:.2f} ({s[f'{x}_median']:.2f})" for x in STRUCTURES)
            lines.append(f"| {name} | {', '.join(run['sides'])} | {method} | {cells} | {s['nigrosome_abs_mean']:.2f} | "
                         f"{s['pointing']:.0%} |")  # fmt: skip
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    runs = list(result["models"].items())
    methods = list(runs[0][1]["summary"])
    fig = Figure(figsize=(11, 3.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(STRUCTURES) + 1)
    width = 0.8 / len(runs)
    for k, (name, run) in enumerate(runs):
        x = np.arange(len(methods)) + (k - (len(runs) - 1) / 2) * width
        for ax, structure in zip(axes, STRUCTURES, strict=False):
            ax.bar(x, [run["summary"][m][f"{structure}_mean"] for m in methods], width, label=name)
        axes[-1].bar(x, [100 * run["summary"][m]["pointing"] for m in methods], width, label=name)
    for ax, title in zip(axes, [*(f"enrichment: {s.replace('_', ' ')}" for s in STRUCTURES), "pointing game (%)"],
                         strict=True):  # fmt: skip
        ax.set_xticks(range(len(methods)), methods)
        ax.set_title(title, fontsize=9)
        if title.startswith("enrichment"):
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.suptitle("Where the maps point on the synthetic test split (mean over maps; 1 = no preference) - "
                 "research use only", fontsize=9)  # fmt: skip
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from monai.transforms import Compose

    from bundle.data import DivideByMeand, LoadNigralPatchesd, SBRTargetd, load_cases, resolve_datalist
    from bundle.explain.explainer import Explainer
    from bundle.explain.maps import METHODS

    dataset_dir, out = Path(args.dataset_dir), Path(args.out)
    cases = load_cases(resolve_datalist(str(dataset_dir / "datalist.json"), str(REPO)), args.section, str(dataset_dir))
    cases = cases[: args.n_cases or None]
    methods = list(METHODS)
    models = {"symmetric": (Path(args.ckpt), SIDES)}
    if args.standard_ckpt:
        models["standard (single-side)"] = (Path(args.standard_ckpt), (args.standard_side,))
    result: dict[str, Any] = {"section": args.section, "n_cases": len(cases), "models": {}}
    embeddings = {}
    for name, (ckpt, sides) in models.items():
        network, patch_size = build_network(ckpt)
        load = Compose([LoadNigralPatchesd(patch_size=patch_size or (50, 50, 20)), SBRTargetd(sbr_max=DEFAULT_SBR_MAX),
                        DivideByMeand(keys=["patch_right", "patch_left"])])  # fmt: skip
        run_dir = out / name.split(" ")[0]
        start = time.perf_counter()
        Explainer(network, load, cases, run_dir, DEFAULT_SBR_MAX, methods, figures=False).run()
        seconds = time.perf_counter() - start
        records = measure(run_dir, cases, dataset_dir, sides, methods)
        embeddings[name] = penultimate_features(network, load, cases, (args.standard_side,) if args.standard_ckpt
                                                else sides)  # fmt: skip
        result["models"][name] = {"checkpoint": str(ckpt), "sides": list(sides), "seconds": round(seconds, 1),
                                  "summary": summarise(records), "records": records}  # fmt: skip
        if name == "symmetric" and args.standard_ckpt:  # the same side as the standard model, for a like comparison
            same = [r for r in records if r["side"] == args.standard_side]
            result["models"]["symmetric, " + args.standard_side] = {"checkpoint": str(ckpt),
                                                                   "sides": [args.standard_side],
                                                                   "summary": summarise(same)}  # fmt: skip
    result["tsne"] = tsne_study(embeddings, out / "tsne.png")
    write_json(out / "study.json", result)
    write_text(out / "study.md", markdown(result) + "\n")
    figure(result, out / "study.png")
    print(markdown(result))
    print("t-SNE:", json.dumps(result["tsne"]))
    print(f"wrote {out / 'study.json'}, study.md, study.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
