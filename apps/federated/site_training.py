"""A site of the federation: the bundle's own training workflow, driven round by round by NVFlare's Client API.

Each round the site receives the global weights, validates them on its own validation cases (the key metric of
``configs/train.json``, ``val_mae``), trains ``local_epochs`` on its own training cases from them (the trainer,
its one-cycle schedule and its checkpoints carry on across rounds), and sends back the weights with the validation
MAE and its case counts. Nothing else leaves the site: no image, no SBR, no prediction. The ``validate`` task (after
the last round) only validates. Written by hand: the loop around the bundle workflow; everything inside it is the
bundle's training config.

Run by NVFlare (see :mod:`apps.federated.job`, which always passes the first six, the defaults of
:mod:`apps.federated.settings`), with arguments::

    --configs configs/train.json,configs/quick_start.json --dataset_dir SITE_FOLDER --datalist SITE/datalist.json
    --output_dir SITE_OUTPUT --local_epochs 2 --rounds 16 [--override id=json ...] [--keep_local NAME,...]
    [--drop_out_at_round N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import nvflare.client as flare
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from bundle.resources import bundle_root
from bundle.workflows.overrides import CheckedConfigWorkflow

logger = logging.getLogger("nigral_sbr.federated")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", required=True, help="comma-separated configs, train.json first")
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--local_epochs", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--override", action="append", default=[], help="id=json, e.g. network_def#channels=[4,8]")
    parser.add_argument("--keep_local", default="", help="comma-separated variables the site never takes from the "
                        "server (those its privacy filter keeps from leaving it)")  # fmt: skip
    parser.add_argument("--drop_out_at_round", type=int, default=None,
                        help="fault drill: the site fails when this round's task arrives")  # fmt: skip
    return parser.parse_args(argv)


def site_workflow(args: argparse.Namespace) -> CheckedConfigWorkflow:
    """The bundle's training workflow for this site: its data, its output folder, the federation's epoch count."""
    root = bundle_root()
    files = [str(root / f) if not Path(f).is_absolute() else f for f in args.configs.split(",")]
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.override)}
    overrides.update(bundle_root=str(root), dataset_dir=args.dataset_dir, datalist=args.datalist,
                     output_dir=args.output_dir, num_epochs=args.rounds * args.local_epochs)  # fmt: skip
    workflow = CheckedConfigWorkflow(files, workflow_type="train", **overrides)
    workflow.initialize()
    return workflow


def merge_received(local: dict[str, torch.Tensor], received: dict, keep_local: set[str]) -> dict[str, torch.Tensor]:
    """The state to load: the received global weights, except the variables this site keeps local."""
    unknown = keep_local - set(local)
    if unknown:
        raise ValueError(f"--keep_local names no variable of the network: {', '.join(sorted(unknown))}")
    return {k: local[k].clone() if k in keep_local else torch.as_tensor(received[k]) for k in local}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    workflow = site_workflow(args)
    parsed = workflow.parser.get_parsed_content
    network, trainer, evaluator = parsed("network"), parsed("train#trainer"), parsed("validate#evaluator")
    n_train, n_val = len(parsed("train_cases")), len(parsed("val_cases"))
    keep_local = {name for name in args.keep_local.split(",") if name}
    flare.init()
    site = flare.get_site_name()
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        if args.drop_out_at_round is not None and received.current_round == args.drop_out_at_round:
            raise RuntimeError(f"{site}: fault drill, dropping out at round {received.current_round}")
        network.load_state_dict(merge_received(network.state_dict(), received.params, keep_local))
        evaluator.run(trainer.state.epoch)
        val_mae = float(evaluator.state.metrics["val_mae"])
        logger.info("%s round %s: validation MAE of the received model %.4f", site, received.current_round, val_mae)
        steps = 0
        if flare.is_train():
            start = trainer.state.iteration
            trainer.state.max_epochs = trainer.state.epoch + args.local_epochs
            trainer.run()
            steps = trainer.state.iteration - start
        params = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        flare.send(FLModel(params=params, params_type=ParamsType.FULL, metrics={"val_mae": val_mae},
                           meta={"site": site, "n_train": n_train, "n_val": n_val, "train_steps": steps}))  # fmt: skip
    workflow.finalize()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    main()
