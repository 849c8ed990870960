"""The synthetic DaT cohorts: the SMWI demo cohort's patients (same ids, same per-side SBR, same split) as
DaT-SPECT (normal / reduced) or DAT-PET (HC / IPD / MSA / PSP) volumes in the template space. Synthetic, for software
testing only; research use only.

Layout of ``out_dir``: ``<modality>/P0001.nii.gz`` ..., ``datalist.json`` (training / validation / test, items
``{"id", "image", "label", "sbr_right", "sbr_left"[, "group"]}``) and ``cohort.json``; written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import tempfile

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist, partition_dataset
from tqdm import tqdm

from bundle.constants import ABNORMAL_SBR
from bundle.dat.phantom import GROUPS, PATTERNS, PET, SPECT, simulate_dat
from bundle.dat.template import AFFINE, SHAPE
from bundle.data.cohort import DEFAULT_SPLIT, NOTICE, SECTIONS, _install, _read_params, _split_sizes, patient_ids
from bundle.data.phantom import sample_labels
from bundle.io import write_csv

__all__ = [
    "DAT_VERSION",
    "MODALITIES",
    "generate_dat_cohort",
    "ensure_dat_cohort",
    "fold_cases",
    "checked_cases",
    "spect_label",
]

logger = logging.getLogger(__name__)

DAT_VERSION = "1.0.0"
MODALITIES = ("spect", "pet")
CLASSES = {"spect": ("normal", "reduced"), "pet": GROUPS}


def spect_label(sbr_right: float, sbr_left: float) -> int:
    """1 (reduced) when either side's SBR is below the bundle's abnormal threshold, else 0 (normal)."""
    return int(sbr_right < ABNORMAL_SBR["right"] or sbr_left < ABNORMAL_SBR["left"])


def _params(modality: str, n_patients: int, seed: int) -> dict:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return {"version": f"{modality}-{DAT_VERSION}", "n_patients": n_patients, "seed": seed,
            "split": [float(f) for f in DEFAULT_SPLIT]}  # fmt: skip


def _write_nifti(volume: np.ndarray, path: pathlib.Path, modality: str) -> None:
    image = nib.Nifti1Image(volume, AFFINE)
    image.set_qform(AFFINE, code=4)  # template (MNI-like) space
    image.set_sform(AFFINE, code=4)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = f"SYNTHETIC DaT-{modality.upper()} - not a real patient".encode()
    nib.save(image, path)


def generate_dat_cohort(
    out_dir: str | os.PathLike, modality: str = "spect", n_patients: int = 367, seed: int = 0, progress: bool = True
) -> pathlib.Path:
    """Write the cohort and return its ``datalist.json``. The labels, ids and split are those of
    ``bundle.data.cohort.generate_cohort(n_patients=..., seed=...)``; PET groups: the non-PD patients are HC, the PD
    patients IPD / MSA / PSP (seeded draw, a third each); MSA and PSP get the mean of the two sides' SBR on both."""
    out_dir = pathlib.Path(out_dir).absolute()
    params = _params(modality, n_patients, seed)
    label_seq, split_seq, _ = np.random.SeedSequence(seed).spawn(3)
    labels = sample_labels(n_patients, np.random.default_rng(label_seq))
    order = np.random.default_rng(split_seq).permutation(n_patients)
    dat_seq = np.random.SeedSequence([seed, MODALITIES.index(modality) + 1])
    group_rng = np.random.default_rng(dat_seq.spawn(1)[0])
    ids = patient_ids(n_patients)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        (tmp / modality).mkdir()
        cases = []
        rngs = [np.random.default_rng(s) for s in dat_seq.spawn(n_patients + 1)[1:]]
        for i in tqdm(range(n_patients), desc=f"synthetic DaT-{modality.upper()}", disable=not progress):
            sbr = {"right": float(labels["sbr_right"][i]), "left": float(labels["sbr_left"][i])}
            case = {"id": ids[i], "image": f"{modality}/{ids[i]}.nii.gz", "sbr_right": sbr["right"],
                    "sbr_left": sbr["left"]}  # fmt: skip
            if modality == "spect":
                pattern, scanner, case["label"] = PATTERNS["spect"], SPECT, spect_label(sbr["right"], sbr["left"])
            else:
                group = GROUPS[int(group_rng.integers(1, 4))] if labels["is_pd"][i] else "HC"
                pattern, scanner, case["label"], case["group"] = PATTERNS[group], PET, GROUPS.index(group), group
                if pattern.symmetric:
                    sbr = dict.fromkeys(sbr, (sbr["right"] + sbr["left"]) / 2)
                    case["sbr_right"] = case["sbr_left"] = sbr["right"]
            _write_nifti(simulate_dat(sbr, pattern, scanner, rngs[i]), tmp / case["image"], modality)
            cases.append(case)
        bounds = np.cumsum((0, *_split_sizes(n_patients, DEFAULT_SPLIT)))
        datalist = {
            name: [cases[i] for i in sorted(order[bounds[k] : bounds[k + 1]])] for k, name in enumerate(SECTIONS)
        }
        (tmp / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")
        meta = {**params, "synthetic": True, "modality": modality, "classes": list(CLASSES[modality]), "notice": NOTICE}
        (tmp / "cohort.json").write_text(json.dumps(meta, indent=1) + "\n")
        _install(tmp, out_dir, params, replace=out_dir.exists())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "datalist.json"


def ensure_dat_cohort(out_dir: str | os.PathLike, modality: str = "spect", n_patients: int = 367,
                      seed: int = 0) -> str:  # fmt: skip
    """``out_dir/datalist.json`` as a string, generating the cohort only if it is missing or stale; a non-empty
    ``out_dir`` that is not a synthetic DaT cohort is never overwritten."""
    out_dir = pathlib.Path(out_dir).absolute()
    if _read_params(out_dir) != _params(modality, n_patients, seed):
        if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "cohort.json").is_file():
            raise FileExistsError(f"{out_dir} is not a synthetic DaT cohort (no cohort.json); refusing to overwrite it")
        generate_dat_cohort(out_dir, modality, n_patients, seed)
    return str(out_dir / "datalist.json")


def fold_cases(datalist: str, section: str, folds: int = 0, fold: int = 0, base_dir: str | None = None) -> list[dict]:
    """The ``section`` ("training" or "validation") of a datalist; with ``folds`` >= 2, k-fold cross-validation
    instead: training and validation pooled and split into ``folds`` parts (seeded), part ``fold`` validating."""
    if folds < 2:
        return load_decathlon_datalist(datalist, True, section, base_dir=base_dir)
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0 .. {folds - 1}, got {fold}")
    sections = [load_decathlon_datalist(datalist, True, name, base_dir=base_dir) for name in ("training", "validation")]
    pooled = [case for cases in sections for case in cases]
    parts = partition_dataset(pooled, num_partitions=folds, shuffle=True, seed=0)
    return parts[fold] if section == "validation" else [c for k, part in enumerate(parts) if k != fold for c in part]


def checked_cases(datalist: str, section: str, base_dir: str | None = None,
                  output_dir: str | None = None) -> list[dict]:  # fmt: skip
    """The cases of a datalist section whose image is a readable NIfTI on the template grid. Every other case is
    logged as one line naming it and the problem, and listed in ``<output_dir>/errors.csv``; the rest go on."""
    good, errors = [], []
    for case in load_decathlon_datalist(datalist, True, section, base_dir=base_dir):
        case_id = str(case.get("id", case.get("image")))
        try:
            image = nib.load(case["image"])
            if tuple(image.shape) != SHAPE or not np.allclose(image.affine, AFFINE, atol=1e-3):
                raise ValueError(f"grid {tuple(image.shape)} / affine is not the template's {SHAPE}; register it first")
        except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            logger.error("%s: %s", case_id, message)
            errors.append({"id": case_id, "image": case.get("image"), "error": message})
            continue
        good.append({**case, "id": case_id})
    if output_dir is not None:  # this run's refusals only: an earlier run's list never stays beside new outputs
        report = pathlib.Path(output_dir) / "errors.csv"
        if errors:
            report.parent.mkdir(parents=True, exist_ok=True)
            write_csv(report, ["id", "image", "error"], errors)
        else:
            report.unlink(missing_ok=True)
    if not good:
        raise ValueError(f"{datalist}: no usable case in section {section!r} ({len(errors)} refused)")
    return good
