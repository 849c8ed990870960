"""Multi-site synthetic SMWI cohort: K hospitals that differ as real ones do (software testing only).

SYNTHETIC: no real patient contributed. Each site renders the demo's midbrain slab with its own scanner and labels
with its own SPECT camera, case mix and MRI-SPECT gap (:mod:`bundle.synthetic.site_model`; documented in
``docs/synthetic_cohort.md``, "Multi-site cohort"). Layout::

    out_dir/site1/smwi/site1-P0001.nii.gz ...   one folder per site, a complete cohort of its own
    out_dir/site1/datalist.json                 the site's training / validation / test split (paths relative to it)
    out_dir/datalist.json                       all sites pooled, the same split, each case with its "site"
    out_dir/cohort.json                         parameters, site profiles, per-patient ground truth

Deterministic by seed (whatever the number of workers), built in a temporary sibling and renamed into place, like
the single-site cohorts (:mod:`bundle.synthetic.smwi_cohort`), whose files and digests it leaves unchanged.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from bundle.synthetic.site_model import (
    SITES,
    SiteProfile,
    site_field_of_view,
    site_labels,
    site_scanner,
    spect_sbr,
    susceptibility_contrast,
)
from bundle.synthetic.smwi_cohort import (
    COHORT_NAME,
    DATALIST_NAME,
    DEFAULT_SPLIT,
    IMAGE_DIR,
    NOTICE,
    SECTIONS,
    datalist_case,
    install_cohort,
    is_empty_dir,
    patient_ids,
    read_cohort_params,
    render_all,
    split_sizes,
    write_json,
)
from bundle.synthetic.smwi_model import sample_labels

__all__ = ["MULTISITE_VERSION", "DEFAULT_SITE_SIZES", "generate_multisite_cohort", "site_datalist"]

MULTISITE_VERSION = "multisite-1.0.0"
DEFAULT_SITE_SIZES = (150, 100, 70, 47)


def generate_multisite_cohort(
    out_dir: str | os.PathLike,
    sizes: Sequence[int] = DEFAULT_SITE_SIZES,
    seed: int = 0,
    sites: Sequence[SiteProfile] = SITES,
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    num_workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> pathlib.Path:
    """Write the multi-site cohort to ``out_dir`` and return the path of its pooled ``datalist.json``.

    ``sizes``: patients per site, one per profile of ``sites`` used (the first ``len(sizes)`` profiles). An
    existing cohort with the same parameters is returned untouched; any other existing ``out_dir`` is replaced
    only with ``force``."""
    out_dir = pathlib.Path(out_dir).absolute()
    sizes = [int(n) for n in sizes]
    if not 1 <= len(sizes) <= len(sites) or min(sizes) < 3:
        raise ValueError(f"sizes must give 1 to {len(sites)} sites of at least 3 patients each, got {sizes}")
    sites = list(sites[: len(sizes)])
    params = {"version": MULTISITE_VERSION, "n_patients": sum(sizes), "seed": seed, "split": [float(f) for f in split]}
    identity = json.loads(json.dumps({**params, "site_sizes": sizes, "sites": [asdict(site) for site in sites]}))
    existed = out_dir.exists() and not is_empty_dir(out_dir)
    if existed and not force:
        if _identity(out_dir) == identity:
            return out_dir / DATALIST_NAME
        raise FileExistsError(
            f"{out_dir} exists but is not the multi-site cohort of seed {seed}, sizes {sizes} and these site profiles;"
            " use force to replace it"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        pooled: dict[str, list[dict]] = {name: [] for name in SECTIONS}
        patients, workers = [], num_workers or os.cpu_count() or 1
        for site, n, site_seq in zip(sites, sizes, np.random.SeedSequence(seed).spawn(len(sizes)), strict=True):
            cases, truth = _write_site(tmp / site.name, site, n, site_seq, split, workers, progress)
            patients += truth
            for name in SECTIONS:
                pooled[name] += [{**c, "image": f"{site.name}/{c['image']}", "site": site.name} for c in cases[name]]
        write_json(tmp / DATALIST_NAME, pooled)
        meta = {
            **identity,
            "generator": __name__,
            "synthetic": True,
            "notice": NOTICE,
            "susceptibility_contrast": {s.name: round(susceptibility_contrast(s), 4) for s in sites},
            "volume_shape": {s.name: list(site_field_of_view(s).shape) for s in sites},
            "patients": patients,
        }
        write_json(tmp / COHORT_NAME, meta)
        install_cohort(tmp, out_dir, params, replace=existed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / DATALIST_NAME


def site_datalist(out_dir: str | os.PathLike, site: str) -> pathlib.Path:
    """The ``datalist.json`` of one site of the cohort in ``out_dir`` (its ``dataset_dir`` is its folder)."""
    path = pathlib.Path(out_dir) / site / DATALIST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{site}: no site of the multi-site cohort in {out_dir} ({path} is missing)")
    return path


def _write_site(
    folder: pathlib.Path,
    site: SiteProfile,
    n: int,
    seed_seq: np.random.SeedSequence,
    split: Sequence[float],
    workers: int,
    progress: bool,
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Render one site into ``folder``; return its datalist sections and its patients' ground truth."""
    label_seq, spect_seq, split_seq, image_seq = seed_seq.spawn(4)
    labels = sample_labels(n, np.random.default_rng(label_seq), site_labels(site))
    at_mri = np.stack([labels["sbr_right"], labels["sbr_left"]], axis=1)
    spect, gap, decline = spect_sbr(at_mri, labels["is_pd"], site, np.random.default_rng(spect_seq))
    ids = [f"{site.name}-{pid}" for pid in patient_ids(n)]
    (folder / IMAGE_DIR).mkdir(parents=True)
    field, scanner = site_field_of_view(site), site_scanner(site)
    tasks = [
        (pid, float(at_mri[i, 0]), float(at_mri[i, 1]), seq, str(folder / IMAGE_DIR / f"{pid}.nii.gz"), field, scanner)
        for i, (pid, seq) in enumerate(zip(ids, image_seq.spawn(n), strict=True))
    ]
    results = render_all(tasks, min(workers, n), progress)
    cases = [datalist_case(res, float(spect[i, 0]), float(spect[i, 1])) for i, res in enumerate(results)]
    order = np.random.default_rng(split_seq).permutation(n)
    bounds = np.cumsum((0, *split_sizes(n, split)))
    sections = {name: [cases[i] for i in sorted(order[bounds[k] : bounds[k + 1]])] for k, name in enumerate(SECTIONS)}
    write_json(folder / DATALIST_NAME, sections)
    truth = [
        {
            "id": pid,
            "site": site.name,
            "is_pd": bool(labels["is_pd"][i]),
            "sbr_at_mri_right": float(at_mri[i, 0]),
            "sbr_at_mri_left": float(at_mri[i, 1]),
            "gap_months": round(float(gap[i]), 2),
            "decline_per_year": round(float(decline[i]), 4),
            **res["truth"],
        }
        for i, (pid, res) in enumerate(zip(ids, results, strict=True))
    ]
    return sections, truth


def _identity(out_dir: pathlib.Path) -> dict | None:
    """What decides a multi-site cohort's content, as its ``cohort.json`` records it; None if not one."""
    if read_cohort_params(out_dir) is None:
        return None
    meta = json.loads((out_dir / COHORT_NAME).read_text())
    keys = ("version", "n_patients", "seed", "split", "site_sizes", "sites")
    return {key: meta.get(key) for key in keys}
