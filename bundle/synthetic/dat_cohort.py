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
from tqdm import tqdm

from bundle.constants import ABNORMAL_SBR
from bundle.dat.template import AFFINE
from bundle.synthetic.dat_phantom import GROUPS, PATTERNS, PET, SPECT, simulate_dat
from bundle.synthetic.smwi_cohort import (
    DEFAULT_SPLIT,
    NOTICE,
    SECTIONS,
    install_cohort,
    patient_ids,
    read_cohort_params,
    split_sizes,
)
from bundle.synthetic.smwi_model import sample_labels

__all__ = [
    "DAT_VERSION",
    "MODALITIES",
    "generate_dat_cohort",
    "ensure_dat_cohort",
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
    ``bundle.synthetic.smwi_cohort.generate_cohort(n_patients=..., seed=...)``; PET groups: the non-PD patients are
    HC, the PD patients IPD / MSA / PSP (seeded draw, a third each); MSA and PSP get the mean of the two sides' SBR on
    both."""
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
        bounds = np.cumsum((0, *split_sizes(n_patients, DEFAULT_SPLIT)))
        datalist = {
            name: [cases[i] for i in sorted(order[bounds[k] : bounds[k + 1]])] for k, name in enumerate(SECTIONS)
        }
        (tmp / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")
        meta = {**params, "synthetic": True, "modality": modality, "classes": list(CLASSES[modality]), "notice": NOTICE}
        (tmp / "cohort.json").write_text(json.dumps(meta, indent=1) + "\n")
        install_cohort(tmp, out_dir, params, replace=out_dir.exists())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "datalist.json"


def ensure_dat_cohort(out_dir: str | os.PathLike, modality: str = "spect", n_patients: int = 367,
                      seed: int = 0) -> str:  # fmt: skip
    """``out_dir/datalist.json`` as a string, generating the cohort only if it is missing or stale; a non-empty
    ``out_dir`` that is not a synthetic DaT cohort is never overwritten."""
    out_dir = pathlib.Path(out_dir).absolute()
    if read_cohort_params(out_dir) != _params(modality, n_patients, seed):
        if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "cohort.json").is_file():
            raise FileExistsError(f"{out_dir} is not a synthetic DaT cohort (no cohort.json); refusing to overwrite it")
        generate_dat_cohort(out_dir, modality, n_patients, seed)
    return str(out_dir / "datalist.json")
