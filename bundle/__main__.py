"""``python -m bundle run <workflow> --config_file ... [--id value ...]``: MONAI's ``monai.bundle run`` with
:class:`~bundle.workflows.overrides.CheckedConfigWorkflow`, so an unknown override id is refused in one line and
``true``/``false`` are read as booleans. Every other MONAI bundle command: ``python -m monai.bundle``."""

from __future__ import annotations

from typing import Any

import fire
from monai.bundle.scripts import run_workflow

from bundle.workflows.overrides import CheckedConfigWorkflow


def run(run_id: str | None = None, **kwargs: Any) -> None:
    """Run the workflow ``run_id`` (e.g. ``training``) of the given config files; arguments as ``monai.bundle run``
    (``--config_file``, ``--meta_file``, ``--logging_file``, ``--tracking``, ``--args_file``, ``--id value``)."""
    arguments = {key: value for key, value in kwargs.items() if value is not None}
    run_workflow(workflow_name=CheckedConfigWorkflow, **({"run_id": run_id} if run_id else {}), **arguments)


if __name__ == "__main__":
    fire.Fire({"run": run})
