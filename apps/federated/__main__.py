"""``python -m apps.federated simulate|export``: the federated job in NVFlare's simulator, or as a job folder.

python -m apps.federated simulate --cohort data/multisite --output_dir runs/federated [--rounds 16]
    [--local_epochs 2] [--min_sites 2] [--privacy none|exclude|percentile] [--override id=json ...]
python -m apps.federated export --cohort data/multisite --output_dir /srv/fl/out --job_dir jobs/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from apps.federated.settings import PRIVACY, FederatedSettings

DEFAULTS = {f.name: f.default for f in fields(FederatedSettings)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m apps.federated", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("simulate", "export"))
    parser.add_argument("--cohort", required=True, help="folder whose sub-folders are the sites (each a datalist.json)")
    parser.add_argument("--sites", nargs="+", default=None, help="site names (default: every sub-folder)")
    parser.add_argument("--output_dir", required=True, help="the global model.pt and rounds.csv (server side)")
    parser.add_argument("--configs", default=",".join(DEFAULTS["configs"]))
    parser.add_argument("--override", action="append", default=[], help="id=json for every site, e.g. num_workers=0")
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"])
    parser.add_argument("--local_epochs", type=int, default=DEFAULTS["local_epochs"])
    parser.add_argument(
        "--min_sites", type=int, default=DEFAULTS["min_sites"], help="sites that must answer every round"
    )
    parser.add_argument("--privacy", choices=PRIVACY, default=DEFAULTS["privacy"])
    parser.add_argument(
        "--round_timeout_s", type=int, default=DEFAULTS["round_timeout_s"], help="0: a round waits for every site"
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--threads", type=int, default=None, help="sites simulated at once (default: all)")
    parser.add_argument("--workspace", default=None, help="simulator workspace (default: OUTPUT_DIR/workspace)")
    parser.add_argument("--job_dir", default=None, help="export: where the job folder goes")
    parser.add_argument("--drop_out", action="append", default=[], help="fault drill: SITE:ROUND")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from apps.federated.job import build_job, cohort_sites, site_script

    try:
        overrides = {key: json.loads(value) for key, value in (o.split("=", 1) for o in args.override)}
        drop_out = {site: int(r) for site, r in (d.split(":", 1) for d in args.drop_out)}
        settings = FederatedSettings(
            sites=cohort_sites(args.cohort, args.sites), output_dir=Path(args.output_dir).resolve(),
            configs=tuple(args.configs.split(",")), overrides=overrides, rounds=args.rounds,
            local_epochs=args.local_epochs, min_sites=args.min_sites, privacy=args.privacy,
            round_timeout_s=args.round_timeout_s, drop_out=drop_out, seed=args.seed,
        )  # fmt: skip
        job = build_job(settings)
    except (ValueError, json.JSONDecodeError) as err:
        sys.exit(f"error: {err}")
    if args.command == "export":
        if Path(site_script()).is_absolute():
            sys.exit("error: run export from the repository root (the job names its site script relative to it)")
        job.export_job(args.job_dir or str(settings.output_dir / "job"))
        print(f"job exported to {args.job_dir or settings.output_dir / 'job'}")
        return
    start = time.perf_counter()
    workspace = args.workspace or str(settings.output_dir / "workspace")
    status = job.simulator_run(workspace, threads=args.threads or len(settings.sites))
    model = settings.output_dir / "model.pt"
    if status or not model.is_file():  # e.g. fewer than --min_sites answered a round: the job stops
        sys.exit(f"error: the federation stopped (status {status}) before it finished; see {workspace}/server/log.txt")
    print(f"global model: {model} ({time.perf_counter() - start:.0f} s; per-round site figures: rounds.csv)")


if __name__ == "__main__":
    main()
