"""Generate the synthetic demo cohort (SMWI NIfTI files + datalist.json); synthetic data, not real patients.

Usage (from the repository root)::

    python scripts/make_demo_cohort.py [--out data/demo] [--n-patients 367] [--seed 0] [--workers N] [--force]
    python scripts/make_demo_cohort.py --field wide --out data/demo_wide   # wide field of view (the localiser)
    python scripts/make_demo_cohort.py --multisite --out data/multisite [--site-sizes 150 100 70 47]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.synthetic.multisite_cohort import DEFAULT_SITE_SIZES, generate_multisite_cohort  # noqa: E402
from bundle.synthetic.smwi_cohort import generate_cohort  # noqa: E402


def _summary(datalist_path: Path) -> str:
    """One line (one per site for the multi-site cohort): n, PD fraction, mean SBR per group, right-left r."""
    cases = [c for section in json.loads(datalist_path.read_text()).values() for c in section]
    truth = {p["id"]: p for p in json.loads((datalist_path.parent / "cohort.json").read_text())["patients"]}
    if cases and "site" in cases[0]:
        sites = sorted({c["site"] for c in cases})
        per_site = [_summary_of([c for c in cases if c["site"] == s], truth) for s in sites]
        return "\n".join(f"{s}: {line}" for s, line in zip(sites, per_site, strict=True))
    return _summary_of(cases, truth)


def _summary_of(cases: list[dict], truth: dict[str, dict]) -> str:
    """One line for ``cases``."""
    right = [c["sbr_right"] for c in cases]
    left = [c["sbr_left"] for c in cases]
    mean = {c["id"]: (c["sbr_right"] + c["sbr_left"]) / 2 for c in cases}
    pd = [mean[i] for i in mean if truth[i]["is_pd"]]
    non_pd = [mean[i] for i in mean if not truth[i]["is_pd"]]

    def avg(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    mr, ml = avg(right), avg(left)
    cov = sum((r - mr) * (x - ml) for r, x in zip(right, left, strict=True))
    var = (sum((r - mr) ** 2 for r in right) * sum((x - ml) ** 2 for x in left)) ** 0.5
    return (
        f"n={len(cases)}  PD fraction={len(pd) / len(cases):.2f}  mean SBR PD={avg(pd):.2f} "
        f"non-PD={avg(non_pd):.2f}  right-left r={cov / var if var else float('nan'):.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output directory (default: data/demo)")
    parser.add_argument("--n-patients", type=int, default=367, help="number of patients (default: 367)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: all CPUs)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--field", choices=("slab", "wide"), default="slab",
                        help="midbrain slab (generator 1.1.0, the demo) or wide field of view (2.0.0)")  # fmt: skip
    parser.add_argument("--multisite", action="store_true",
                        help="the multi-site cohort: one folder per site plus a pooled datalist")  # fmt: skip
    parser.add_argument("--site-sizes", type=int, nargs="+", default=list(DEFAULT_SITE_SIZES),
                        help="patients per site with --multisite (default: 150 100 70 47)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.multisite:
            datalist = generate_multisite_cohort(
                args.out, sizes=args.site_sizes, seed=args.seed, num_workers=args.workers, force=args.force
            )
        else:
            datalist = generate_cohort(
                args.out, n_patients=args.n_patients, seed=args.seed, num_workers=args.workers, force=args.force,
                field=args.field,
            )  # fmt: skip
    except (FileExistsError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    print(datalist)
    print(_summary(datalist))


if __name__ == "__main__":
    main()
