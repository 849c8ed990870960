"""The ``explain`` workflows of the DaT bundles: per-case maps (LRP with the DaT-SPECT paper's rule layout, or
full-gradient saliency), class-mean maps, the LRP paper's heat map and its 95th-percentile cluster, DAT-Net's
binding ratios, and how each lands on the generator's known regions. Maps are in the network's input space: after
the LRP paper's mirroring, the left hemisphere is the side with the lower putamen uptake ('ipsilateral')."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from torch import nn
from tqdm import tqdm

from bundle.dat.binding import binding_ratio, dl_binding_ratio, group_comparison, salient_region
from bundle.dat.panels import template_panel
from bundle.dat.preprocessing import to_template
from bundle.dat.template import AFFINE, region_masks, striatal_box
from bundle.explain.fullgrad import fullgrad_saliency
from bundle.explain.lrp import lrp, paper_layout
from bundle.explain.measures import enrichment_ratio
from bundle.io import safe_file_stem, staged_outputs, write_csv, write_json

__all__ = ["CaseMaps", "case_maps", "heat_map", "cluster_overlap", "explain_spect", "explain_datnet"]

logger = logging.getLogger(__name__)
STRIATUM_CENTRE = (11, 27, 16)  # template voxel the panels cut through: the left (ipsilateral) putamen


@dataclass
class CaseMaps:
    """Per case: id, true label, predicted class, the map and the preprocessed volume (template grid, input space)."""

    ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    volumes: list[np.ndarray] = field(default_factory=list)
    mirrored: list[bool] = field(default_factory=list)


def _method(name: str) -> Any:
    if name == "lrp":
        return lambda net, x, target: lrp(net, x, layout=partial(paper_layout, flat_convs=2), target=target)
    if name == "fullgrad":
        return fullgrad_saliency
    raise ValueError(f"method must be 'lrp' or 'fullgrad', got {name!r}")


def case_maps(network: nn.Module, dataset: Dataset, method: str, setting: str, device: torch.device | str = "cpu",
              batch_size: int = 4) -> CaseMaps:  # fmt: skip
    """The ``method`` map of every case of ``dataset`` (items with ``image``, ``id`` and ``label``) for the class the
    network predicts, put back on the template grid (zero outside a ``striatum`` crop)."""
    explain, result = _method(method), CaseMaps()
    network = network.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in tqdm(loader, desc=f"{method} maps", unit="batch"):
        x = torch.as_tensor(batch["image"]).float().to(device)
        with torch.no_grad():
            predicted = network(x).argmax(1)
        maps = explain(network, x, predicted).sum(1).detach().cpu().numpy()
        volumes = x[:, 0].cpu().numpy()
        for i, case_id in enumerate(batch["id"]):
            result.ids.append(str(case_id))
            result.labels.append(int(batch["label"][i]))
            result.predicted.append(int(predicted[i]))
            result.maps.append(to_template(maps[i], setting))
            result.volumes.append(to_template(volumes[i], setting))
            result.mirrored.append(bool(batch.get("image_mirrored", [False] * len(batch["id"]))[i]))
    return result


def heat_map(maps: CaseMaps, positive: int = 1, correct_only: bool = True) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The LRP paper's heat map: the mean map of the cases correctly classified as ``positive`` minus that of the
    cases correctly classified as the other class (``correct_only=False``: of all cases of each true class); with
    the class-mean maps."""
    means = {}
    for label in sorted(set(maps.labels)):
        chosen = [m for m, y, p in zip(maps.maps, maps.labels, maps.predicted, strict=True)
                  if y == label and (p == label or not correct_only)]  # fmt: skip
        if chosen:
            means[label] = np.mean(chosen, axis=0)
    if len(means) < 2:
        raise ValueError(
            "no heat map: one class has no (correctly classified) case; set correct_only to false to "
            "average all cases of each true class"
        )
    other = next(label for label in means if label != positive)
    return means[positive] - means[other], means


def _seen(setting: str) -> np.ndarray:
    """Brain voxels the network of a setting sees (the flat rule also hands relevance to blanked-out voxels)."""
    brain = region_masks()["brain"]
    box = np.zeros_like(brain)
    box[striatal_box()] = True
    return brain & {"striatum": box, "without_striatum": ~box}.get(setting, np.ones_like(box))


def _threshold_region(setting: str) -> np.ndarray:
    """Where the paper takes the 95th percentile of the heat map: the brain outside the striatal box (inside it for
    the striatum-only setting)."""
    return _seen("without_striatum" if setting != "striatum" else "striatum")


def cluster_overlap(cluster: np.ndarray, regions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per region: Dice with the cluster, the share of the cluster inside it and the enrichment (that share divided
    by the region's share of the brain)."""
    masks = region_masks()
    brain = masks["brain"]
    result = {}
    for name in regions:
        region = masks[name]
        inside = float((cluster & region).sum())
        result[name] = {"dice": 2 * inside / max(1.0, float(cluster.sum() + region.sum())),
                        "share_of_cluster": inside / max(1.0, float(cluster.sum())),
                        "enrichment": enrichment_ratio(cluster[brain].astype(float), region[brain])}  # fmt: skip
    return result


def _save(volume: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(volume.astype(np.float32), AFFINE), path)


def _write_case_maps(maps: CaseMaps, folder: Path, name: str) -> list[dict[str, Any]]:
    """Per-case NIfTI maps in the subject's real orientation (mirrored back) and the rows of the cases' CSV."""
    folder.mkdir()
    rows = []
    for case_id, volume_map, mirrored, label, predicted in zip(maps.ids, maps.maps, maps.mirrored, maps.labels,
                                                               maps.predicted, strict=True):  # fmt: skip
        real = volume_map[::-1] if mirrored else volume_map
        _save(np.ascontiguousarray(real), folder / f"{safe_file_stem(case_id)}_{name}.nii.gz")
        rows.append({"id": case_id, "label": label, "predicted": predicted, "mirrored": mirrored})
    return rows


def explain_spect(network: nn.Module, dataset: Dataset, setting: str, output_dir: str, classes: Sequence[str],
                  percentile: float = 95.0, device: torch.device | str = "cpu",
                  correct_only: bool = True) -> dict[str, Any]:  # fmt: skip
    """LRP maps of every case, the class-mean maps, the heat map and its ``percentile`` clusters (thresholds taken
    over the brain outside the striatal box, as the paper's Fig. 3), as NIfTI and PNG, and ``explain.json`` with
    each cluster's overlap with the generator's regions. Clusters: ``positive`` (the paper's: heat above its
    percentile), ``negative`` (below 100 - percentile) and ``magnitude`` (|heat| above its percentile): the sign of LRP
    evidence depends on what the network learned (residual putamen uptake may be evidence *against* 'reduced')."""
    maps = case_maps(network, dataset, "lrp", setting, device)
    heat, means = heat_map(maps, correct_only=correct_only)
    region, seen = _threshold_region(setting), _seen(setting)
    clusters = {
        "magnitude": (np.abs(heat) > np.percentile(np.abs(heat)[region], percentile)) & seen,
        "positive": (heat > np.percentile(heat[region], percentile)) & seen,
        "negative": (heat < np.percentile(heat[region], 100 - percentile)) & seen,
    }
    cluster = clusters["magnitude"]
    regions = ["putamen_left", "putamen_right", "caudate_left", "caudate_right", "insula_left", "insula_right",
               "thalamus", "midbrain", "occipital"]  # fmt: skip
    summary = {"setting": setting, "method": "lrp (flat, flat, alpha2-beta1, alpha2-beta1, epsilon 1e-4)",
               "orientation": "left = ipsilateral (lower putamen uptake)", "n": len(maps.ids),
               "correct": {classes[k]: int(sum(y == p == k for y, p in zip(maps.labels, maps.predicted, strict=True)))
                           for k in range(len(classes))},
               "correct_only": correct_only, "percentile": percentile,
               "cluster_voxels": {k: int(v.sum()) for k, v in clusters.items()},
               "cluster_overlap": {k: cluster_overlap(v, regions) for k, v in clusters.items()}}  # fmt: skip
    with staged_outputs(output_dir) as stage:
        rows = _write_case_maps(maps, stage / "maps", "relevance")
        write_csv(stage / "cases.csv", ["id", "label", "predicted", "mirrored"], rows)
        for label, mean in means.items():
            _save(mean, stage / f"mean_relevance_{classes[label]}.nii.gz")
        _save(heat, stage / "heat_map.nii.gz")
        for kind, mask in clusters.items():
            _save(mask.astype(np.float32), stage / f"heat_map_p{percentile:g}_{kind}.nii.gz")
        background = np.mean(maps.volumes, axis=0)
        shown = {f"mean relevance, {classes[k]}": m for k, m in means.items()} | {"heat map": heat}
        template_panel(background, shown, STRIATUM_CENTRE, f"LRP, setting '{setting}': heat map and its "
                       f"{percentile:g}th-percentile |heat| cluster (green); left = ipsilateral",
                       stage / "heat_map.png",
                       contour=cluster)  # fmt: skip
        write_json(stage / "explain.json", summary)
    logger.info(
        "heat-map |cluster|: %s", {k: round(v["dice"], 3) for k, v in summary["cluster_overlap"]["magnitude"].items()}
    )
    return summary


def explain_datnet(network: nn.Module, dataset: Dataset, output_dir: str, classes: Sequence[str],
                   threshold: float = 0.7,
                   device: torch.device | str = "cpu", write_maps: bool = True) -> dict[str, Any]:  # fmt: skip
    """Full-gradient saliency of every case, group-mean maps, and the binding ratios: the conventional BR (bilateral
    caudate and putamen over the occipital cortex) and the DL-BR (the cases' mean saliency, normalised within the
    brain, at or above ``threshold`` as the specific region), each compared across the disease groups."""
    maps = case_maps(network, dataset, "fullgrad", "full", device)
    masks = region_masks()
    mean_saliency = np.mean(maps.maps, axis=0)
    region = salient_region(mean_saliency, masks["brain"], threshold)
    groups = [classes[label] for label in maps.labels]
    conventional = [binding_ratio(v, masks["striatum"], masks["occipital"]) for v in maps.volumes]
    deep = [dl_binding_ratio(v, mean_saliency, masks["occipital"], masks["brain"], threshold) for v in maps.volumes]
    diseases = [c for c in classes if c != "HC"]
    summary = {"method": "fullgrad", "n": len(maps.ids), "threshold": threshold, "salient_voxels": int(region.sum()),
               "salient_overlap": cluster_overlap(region, ["putamen", "caudate_left", "caudate_right", "thalamus",
                                                            "midbrain", "insula", "occipital"]),
               "br": group_comparison(conventional, groups, diseases),
               "dl_br": group_comparison(deep, groups, diseases)}  # fmt: skip
    if write_maps:
        with staged_outputs(output_dir) as stage:
            _write_case_maps(maps, stage / "maps", "saliency")
            rows = [
                {"id": i, "group": g, "predicted": classes[p], "br": round(b, 4), "dl_br": round(d, 4)}
                for i, g, p, b, d in zip(maps.ids, groups, maps.predicted, conventional, deep, strict=True)
            ]
            write_csv(stage / "binding_ratios.csv", ["id", "group", "predicted", "br", "dl_br"], rows)
            means = {f"mean saliency, {c}": np.mean([m for m, y in zip(maps.maps, groups, strict=True) if y == c], 0)
                     for c in classes if c in groups}  # fmt: skip
            for name, mean in means.items():
                _save(mean, stage / f"mean_saliency_{name.split(', ')[1]}.nii.gz")
            _save(region.astype(np.float32), stage / "dl_br_region.nii.gz")
            template_panel(np.mean(maps.volumes, axis=0), means, STRIATUM_CENTRE,
                           f"Full-gradient saliency per group; DL-BR region (saliency >= {threshold:g}) in green",
                           stage / "saliency.png", contour=region)  # fmt: skip
            write_json(stage / "explain.json", summary)
    return summary
