"""``python -m apps.pacs orthanc --storage DIR [--port 8042]``: Orthanc with the project's configuration.
``python -m apps.pacs route --orthanc http://127.0.0.1:8042 --state DIR``: the study router beside it.

Credentials: ``ORTHANC_USERNAME`` / ``ORTHANC_PASSWORD`` in the environment, or ``--credentials FILE`` (one line
``user:password``); never on the command line. Research use only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from apps.pacs.client import OrthancClient, credentials
from apps.pacs.orthanc import start_orthanc, write_config
from apps.pacs.router import StudyRouter
from bundle.resources import bundle_root

DEFAULT_DEPLOY_PYTHON = bundle_root() / ".venv-deploy" / "bin" / "python"


def orthanc(args: argparse.Namespace) -> int:
    user, password = credentials(args.credentials)
    storage = Path(args.storage)
    config = write_config(storage, args.port, user, password, args.stable_age)
    process = start_orthanc(config, storage / "orthanc.log")
    print(f"Orthanc on http://127.0.0.1:{args.port} (storage {storage}, log {storage / 'orthanc.log'}); Ctrl-C stops")
    try:
        return process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        return process.wait(timeout=60)


def route(args: argparse.Namespace) -> int:
    client = OrthancClient(args.orthanc, credentials(args.credentials))
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    deploy = [args.deploy_python, "-m", "apps.deploy"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(bundle_root()), os.environ.get("PYTHONPATH", "")]))
    router = StudyRouter(client, state / "router_state.json", deploy, Path(args.models) if args.models else None, env,
                         cwd=bundle_root())  # fmt: skip
    polls = 0
    while args.max_polls is None or polls < args.max_polls:
        router.poll()
        polls += 1
        time.sleep(args.interval)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.pacs", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("orthanc", help="start Orthanc with the project's configuration")
    server.add_argument("--storage", required=True, help="folder for Orthanc's database, configuration and log")
    server.add_argument("--port", type=int, default=8042, help="HTTP port on 127.0.0.1")
    server.add_argument("--stable-age", type=int, default=10, help="seconds without new instances: stable")
    server.add_argument("--credentials", help="file with one line user:password (else ORTHANC_USERNAME/PASSWORD)")
    router = commands.add_parser("route", help="route stable studies through the Deploy app")
    router.add_argument("--orthanc", default="http://127.0.0.1:8042", help="Orthanc's REST API")
    router.add_argument("--state", required=True, help="folder of the router's state file")
    router.add_argument("--credentials", help="file with one line user:password (else ORTHANC_USERNAME/PASSWORD)")
    router.add_argument("--deploy-python", default=str(DEFAULT_DEPLOY_PYTHON), help="the Deploy environment's python")
    router.add_argument("--models", help="models folder for the app (default: the checkout's models/)")
    router.add_argument("--interval", type=float, default=5.0, help="seconds between polls of /changes")
    router.add_argument("--max-polls", type=int, default=None, help="stop after this many polls (default: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return orthanc(args) if args.command == "orthanc" else route(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
