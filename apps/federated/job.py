"""The federated job: one FedAvg server (:class:`~apps.federated.controller.SiteWeightedFedAvg`) and one site script
per site (:mod:`apps.federated.site_training`, NVFlare's ``ScriptRunner``), optional privacy filters on what a site
sends. Built with NVFlare's ``FedJob``; run in the simulator or exported for a provisioned deployment."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from nvflare.app_common.filters.exclude_vars import ExcludeVars
from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy
from nvflare.client.config import TransferType
from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType
from nvflare.job_config.script_runner import ScriptRunner

from apps.federated.controller import TASKS, SiteWeightedFedAvg
from apps.federated.settings import FederatedSettings
from bundle.resources import bundle_root
from bundle.workflows.checkpoints import ModelRecord

SITE_SCRIPT = Path(__file__).with_name("site_training.py")


def initial_model(settings: FederatedSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The starting weights (seeded, as a single-site run would initialise) and the training record of the network
    the configs define."""
    root = bundle_root()
    parser = ConfigParser()
    parser.read_config([str(root / c) for c in settings.configs])
    parser.update(dict(settings.overrides))
    torch.manual_seed(settings.seed)
    network = parser.get_parsed_content("network_def")
    record = ModelRecord(network, parser.get_parsed_content("sbr_max")).info()
    return {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}, record


def site_script() -> str:
    """The site script as the job names it: relative to the working directory when that is the repository root, so
    that a site runs the copy in the job's own ``custom`` folder; else its absolute path on this machine."""
    try:
        return str(SITE_SCRIPT.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(SITE_SCRIPT)


def site_arguments(settings: FederatedSettings, site: str, keep_local: Sequence[str] = ()) -> str:
    """The site script's command line (NVFlare splits it on spaces)."""
    folder = Path(settings.sites[site]).resolve()
    args = ["--configs", ",".join(settings.configs), "--dataset_dir", str(folder),
            "--datalist", str(folder / "datalist.json"), "--output_dir", str(settings.output_dir / "sites" / site),
            "--local_epochs", str(settings.local_epochs), "--rounds", str(settings.rounds)]  # fmt: skip
    for key, value in settings.overrides.items():
        args += ["--override", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    if keep_local:
        args += ["--keep_local", ",".join(keep_local)]
    if site in settings.drop_out:
        args += ["--drop_out_at_round", str(settings.drop_out[site])]
    if any(not a or any(c.isspace() or c in "'\"" for c in a) for a in args):
        raise ValueError(f"{site}: no spaces or quotes in site arguments (NVFlare splits them on spaces): {args}")
    return " ".join(args)


def build_job(settings: FederatedSettings, name: str = "nigral_sbr_fedavg") -> FedJob:
    """The FedJob: server controller, one site script per site, privacy filters on the sites' results."""
    settings.check()
    params, record = initial_model(settings)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    start = settings.output_dir.resolve() / "initial_model.npz"
    np.savez(start, **params)
    job = FedJob(name=name, min_clients=settings.min_sites)
    job.set_app_packages(["bundle"])  # installed at every site; a partial copy in the job would shadow it
    job.to_server(SiteWeightedFedAvg(str(start), record, str(settings.output_dir.resolve()), settings.rounds,
                                     settings.min_sites, settings.round_timeout_s))  # fmt: skip
    # the names, not the regex: NVFlare writes a compiled pattern into the job config as an empty object
    kept_local = [name for name in params if re.fullmatch(settings.exclude_vars, name)]
    if settings.privacy == "exclude" and not kept_local:
        raise ValueError(f"exclude_vars {settings.exclude_vars!r} matches no variable of the network")
    transfer = TransferType.DIFF if settings.privacy == "percentile" else TransferType.FULL
    # filters for the named tasks: NVFlare 2.9 looks a site's filters up by the exact task name, so a filter added for
    # the default pattern "*" would never be applied
    for site in settings.sites:
        local = kept_local if settings.privacy == "exclude" else ()
        runner = ScriptRunner(script=site_script(), script_args=site_arguments(settings, site, local),
                              params_transfer_type=transfer)  # fmt: skip
        job.to(runner, site)
        if settings.privacy == "exclude":
            job.to(ExcludeVars(exclude_vars=kept_local), site, filter_type=FilterType.TASK_RESULT, tasks=list(TASKS))
        elif settings.privacy == "percentile":
            privacy = PercentilePrivacy(percentile=settings.percentile, gamma=settings.percentile_gamma)
            job.to(privacy, site, filter_type=FilterType.TASK_RESULT, tasks=list(TASKS))
    return job


def cohort_sites(cohort: str | Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """The sites of a multi-site cohort folder (each sub-folder with a ``datalist.json``), or the named ones."""
    cohort = Path(cohort)
    found = {p.parent.name: p.parent for p in sorted(cohort.glob("*/datalist.json"))}
    if not found:
        raise ValueError(f"{cohort}: no site folder with a datalist.json")
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(f"{cohort}: no site {', '.join(missing)} (found {', '.join(found)})")
        return {n: found[n] for n in names}
    return found
