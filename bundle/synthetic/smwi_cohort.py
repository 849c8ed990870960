"""Synthetic nigral SMWI cohort with striatal DaT-SPECT SBR labels, for software testing only.

The cohort is SYNTHETIC: no real patient contributed to it. It exists to exercise the bundle
(training, calibration, inference, evaluation) end to end without clinical data; research use
only. The generative model and the rationale of every parameter are documented in
``docs/synthetic_cohort.md``. In brief:

The labels and images come from :mod:`bundle.synthetic.smwi_phantom` (labels, image model, annotation).

:func:`generate_cohort` writes NIfTI files, ``datalist.json`` (MONAI decathlon style) and
``cohort.json`` atomically and deterministically by seed; :func:`ensure_demo_cohort` generates
on first use only.
"""

from __future__ import annotations

import gzip
import json
import math
import multiprocessing as mp
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict

import nibabel as nib
import numpy as np
from tqdm import tqdm

from bundle.synthetic.smwi_model import (
    ACQUISITION,
    ANATOMY,
    LABELS,
    SBR_MAX,
    SCANNER,
    SLAB,
    SURROUNDINGS,
    VARIATION,
    VOLUME_SHAPE,
    VOXEL_SIZE,
    WIDE_FIELD,
    FieldOfView,
    sample_labels,
)
from bundle.synthetic.smwi_phantom import RenderedSubject, render_subject, simulate_subject

__all__ = [
    "SBR_MAX",
    "VOLUME_SHAPE",
    "VOXEL_SIZE",
    "RenderedSubject",
    "ensure_demo_cohort",
    "generate_cohort",
    "render_subject",
    "sample_labels",
    "simulate_subject",
    "patient_ids",
    "structure_masks",
]

GENERATOR_VERSION = "1.1.0"
"""Version of the midbrain-slab cohort (the demo; ``field="slab"``), reproduced bit for bit."""
WIDE_GENERATOR_VERSION = "2.0.0"
"""Version of the wide-field cohort (``field="wide"``): a 104 x 104 x 36 mm field of view, subject position SD
10 mm, rotations up to 10 degrees, dentate nuclei, globi pallidi and veins around the midbrain."""
FIELDS: dict[str, tuple[str, FieldOfView]] = {
    "slab": (GENERATOR_VERSION, SLAB),
    "wide": (WIDE_GENERATOR_VERSION, WIDE_FIELD),
}
IMAGE_DIR = "smwi"
DATALIST_NAME = "datalist.json"
COHORT_NAME = "cohort.json"
SECTIONS = ("training", "validation", "test")
DEFAULT_SPLIT = (0.70, 0.15, 0.15)
NOTICE = "Synthetic data for software testing and demonstration only; not real patients. Research use only."


def patient_ids(n_patients: int) -> list[str]:
    """The ids of a cohort of ``n_patients``: P0001, P0002, ... (more digits when needed)."""
    return [f"P{i + 1:0{max(4, len(str(n_patients)))}d}" for i in range(n_patients)]


def generate_cohort(
    out_dir: str | os.PathLike,
    n_patients: int = 367,
    seed: int = 0,
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    num_workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    field: str = "slab",
) -> pathlib.Path:
    """Write a synthetic cohort to ``out_dir`` and return the path of its ``datalist.json``.

    Layout: ``smwi/P0001.nii.gz`` ..., ``datalist.json`` (patient-level split shuffled by ``seed``)
    and ``cohort.json`` (parameters, per-patient ground truth). The output is byte-identical for
    given ``(n_patients, seed, split)`` whatever ``num_workers`` (default: all CPUs). It is built in
    a temporary sibling directory and renamed into place, so a failure never leaves a partial
    ``out_dir``. An existing cohort with the same parameters is returned untouched; any other
    existing ``out_dir`` is replaced only with ``force``. ``field``: ``"slab"`` (midbrain slab, generator 1.1.0, the
    demo) or ``"wide"`` (wide field of view for the localiser, generator 2.0.0).
    """
    out_dir = pathlib.Path(out_dir).absolute()
    sizes = split_sizes(n_patients, split)
    params = _params(n_patients, seed, split, field)
    existed = out_dir.exists() and not is_empty_dir(out_dir)
    if existed and not force:
        if read_cohort_params(out_dir) == params:
            return out_dir / DATALIST_NAME
        raise FileExistsError(f"{out_dir} exists but is not a cohort generated with {params}; use force to replace it")

    label_seq, split_seq, image_seq = np.random.SeedSequence(seed).spawn(3)
    labels = sample_labels(n_patients, np.random.default_rng(label_seq))
    order = np.random.default_rng(split_seq).permutation(n_patients)
    ids = patient_ids(n_patients)
    sbr = [(float(r), float(s)) for r, s in zip(labels["sbr_right"], labels["sbr_left"], strict=True)]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        (tmp / IMAGE_DIR).mkdir()
        tasks = [
            (pid, *sbr[i], seq, str(tmp / IMAGE_DIR / f"{pid}.nii.gz"), field)
            for i, (pid, seq) in enumerate(zip(ids, image_seq.spawn(n_patients), strict=True))
        ]
        results = render_all(tasks, min(num_workers or os.cpu_count() or 1, n_patients), progress)
        cases = [datalist_case(res, *sbr[i]) for i, res in enumerate(results)]
        bounds = np.cumsum((0, *sizes))
        datalist = {
            name: [cases[i] for i in sorted(order[bounds[k] : bounds[k + 1]])] for k, name in enumerate(SECTIONS)
        }
        write_json(tmp / DATALIST_NAME, datalist)
        field_of_view = FIELDS[field][1]
        model = {"labels": LABELS, "anatomy": ANATOMY, "variation": VARIATION, "acquisition": ACQUISITION,
                 "field_of_view": field_of_view}  # fmt: skip
        if field_of_view.surroundings:
            model["surroundings"] = SURROUNDINGS
        meta = {
            **params,
            "generator": __name__,
            "synthetic": True,
            "notice": NOTICE,
            "split_sizes": dict(zip(SECTIONS, sizes, strict=True)),
            "field": field,
            "volume_shape": list(field_of_view.shape),
            "voxel_size_mm": list(VOXEL_SIZE),
            "model": {name: asdict(part) for name, part in model.items()},
            "patients": [
                {"id": res["id"], "is_pd": bool(labels["is_pd"][i]), **res["truth"]} for i, res in enumerate(results)
            ],
        }
        write_json(tmp / COHORT_NAME, meta)
        install_cohort(tmp, out_dir, params, replace=existed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left once renamed into place
    return out_dir / DATALIST_NAME


def ensure_demo_cohort(
    out_dir: str | os.PathLike, n_patients: int = 367, seed: int = 0, field: str = "slab"
) -> pathlib.Path:
    """Return ``out_dir/datalist.json``, generating the cohort only if it is missing or stale.

    Stale: ``out_dir/cohort.json`` records another ``n_patients``, ``seed``, split or generator
    version. A non-empty ``out_dir`` without ``cohort.json`` is not ours and is never overwritten.
    """
    out_dir = pathlib.Path(out_dir).absolute()
    if read_cohort_params(out_dir) == _params(n_patients, seed, DEFAULT_SPLIT, field):
        return out_dir / DATALIST_NAME
    if out_dir.exists() and not is_empty_dir(out_dir) and not (out_dir / COHORT_NAME).is_file():
        raise FileExistsError(f"{out_dir} is not a synthetic cohort (no {COHORT_NAME}); refusing to overwrite it")
    return generate_cohort(out_dir, n_patients, seed, force=True, field=field)


def _nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """Deterministic .nii.gz bytes: qform = sform = affine with code 1 (scanner), gzip mtime 0."""
    img = nib.Nifti1Image(volume, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"SYNTHETIC SMWI - not a real patient"
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def structure_masks(out_dir: str | os.PathLike, patient_id: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The structure masks (``phantom.STRUCTURES`` per side, bool, volume grid) and the affine of one patient of the
    cohort in ``out_dir``, rendered again from the seed its ``cohort.json`` records (the volume is bit-identical)."""
    meta = json.loads((pathlib.Path(out_dir) / "cohort.json").read_text())
    n_patients, field = int(meta["n_patients"]), str(meta.get("field", "slab"))
    ids = patient_ids(n_patients)
    if patient_id not in ids:
        raise ValueError(f"{patient_id}: not a patient of the cohort in {out_dir}")
    index = ids.index(patient_id)
    label_seq, _, image_seq = np.random.SeedSequence(int(meta["seed"])).spawn(3)
    labels = sample_labels(n_patients, np.random.default_rng(label_seq))
    rng = np.random.default_rng(image_seq.spawn(n_patients)[index])
    s = simulate_subject(float(labels["sbr_right"][index]), float(labels["sbr_left"][index]), rng,
                         FIELDS[field][1], masks=True)  # fmt: skip
    return s.masks, s.affine


def datalist_case(rendered: dict, sbr_right: float, sbr_left: float) -> dict:
    """The datalist entry of one rendered patient (a :func:`render_all` result) with its SBR labels."""
    patient_id = rendered["id"]
    return {
        "id": patient_id,
        "image": f"{IMAGE_DIR}/{patient_id}.nii.gz",
        "centroid_right": rendered["centroid_right"],
        "centroid_left": rendered["centroid_left"],
        "centroid_space": "voxel",
        "sbr_right": sbr_right,
        "sbr_left": sbr_left,
    }


def _render_case(task: tuple) -> dict:
    """Worker: render one patient, write its NIfTI, return its annotation and ground truth.

    ``task``: ``(id, sbr_right, sbr_left, SeedSequence, path, field)`` where ``field`` is a name of ``FIELDS`` or a
    ``FieldOfView``, optionally followed by a ``Scanner`` (default ``SCANNER``)."""
    patient_id, sbr_right, sbr_left, seed_seq, path, field, *scanner = task
    field_of_view = FIELDS[field][1] if isinstance(field, str) else field
    s = simulate_subject(sbr_right, sbr_left, np.random.default_rng(seed_seq), field_of_view, scanner=scanner[0]
                         if scanner else SCANNER)  # fmt: skip
    pathlib.Path(path).write_bytes(_nifti_bytes(s.volume, s.affine))
    return {
        "id": patient_id,
        "centroid_right": [int(v) for v in s.centroid_right],
        "centroid_left": [int(v) for v in s.centroid_left],
        "truth": {
            "visibility_right": round(s.visibility_right, 4),
            "visibility_left": round(s.visibility_left, 4),
            "nigrosome_right_voxel": [round(float(v), 3) for v in s.nigrosome_right],
            "nigrosome_left_voxel": [round(float(v), 3) for v in s.nigrosome_left],
        },
    }


def render_all(tasks: list[tuple], num_workers: int, progress: bool) -> list[dict]:
    """Render all tasks (see ``_render_case``) in order, in-process or with a spawn pool of ``num_workers``."""
    results = []
    with tqdm(total=len(tasks), desc="synthetic cohort", unit="patient", disable=None if progress else True) as bar:
        if num_workers <= 1:
            for task in tasks:
                results.append(_render_case(task))
                bar.update()
            return results
        with mp.get_context("spawn").Pool(num_workers) as pool:
            for result in pool.imap(_render_case, tasks, chunksize=max(1, len(tasks) // (8 * num_workers))):
                results.append(result)
                bar.update()
    return results


def split_sizes(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    """Training / validation / test sizes: rounded fractions for the first two, the rest for test."""
    if len(split) != 3 or min(split) < 0 or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(split)}")
    n_train, n_val = round(split[0] * n), round(split[1] * n)
    if n_train + n_val > n:
        raise ValueError(f"split {tuple(split)} leaves no test set for {n} patients")
    return n_train, n_val, n - n_train - n_val


def _params(n_patients: int, seed: int, split: Sequence[float], field: str = "slab") -> dict:
    if field not in FIELDS:
        raise ValueError(f"field must be one of {sorted(FIELDS)}, got {field!r}")
    version = FIELDS[field][0]
    return {"version": version, "n_patients": n_patients, "seed": seed, "split": [float(f) for f in split]}


def read_cohort_params(out_dir: pathlib.Path) -> dict | None:
    """Generation parameters of a complete cohort in ``out_dir``, else None."""
    try:
        meta = json.loads((out_dir / COHORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not (out_dir / DATALIST_NAME).is_file():
        return None
    return {key: meta.get(key) for key in ("version", "n_patients", "seed", "split")}


def is_empty_dir(path: pathlib.Path) -> bool:
    """Whether ``path`` is a folder with nothing in it (a file is not)."""
    return path.is_dir() and not any(path.iterdir())


def write_json(path: pathlib.Path, obj: dict) -> None:
    """Indented JSON with a final newline (the cohort files)."""
    path.write_text(json.dumps(obj, indent=1) + "\n")


def install_cohort(tmp: pathlib.Path, out_dir: pathlib.Path, params: dict, replace: bool) -> None:
    """Rename the finished ``tmp`` to ``out_dir``; an old ``out_dir`` is moved aside first, then deleted."""
    try:
        os.rename(tmp, out_dir)  # atomic; fails if out_dir exists and is not empty
        return
    except OSError:
        if not out_dir.exists():
            raise
    if not replace:  # out_dir appeared while we were generating
        if read_cohort_params(out_dir) == params:
            return  # a concurrent run produced the same cohort: keep it, discard ours
        raise FileExistsError(f"{out_dir} appeared during generation with other parameters")
    aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.rename(out_dir, aside / "old")
    try:
        os.rename(tmp, out_dir)
    except OSError:
        os.rename(aside / "old", out_dir)  # put the old cohort back
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
