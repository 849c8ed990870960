"""Command-line overrides: read them as the bundle command line does, and refuse ids that no config defines.

``python -m monai.bundle run`` accepts any ``--id value`` and *adds* an id it does not know, so a typo such as
``--num_epoch 2`` is silently ignored and the run trains for the configured ``num_epochs``. :func:`unknown_override`
compares every override id with the ids of the workflow's merged config files; :func:`check_command_line` runs that
check on the process's own command line as the first step of every workflow. Deliberate new ids belong in an extra
config file layered last (``--config_file "['configs/train.json','my_ids.json']"``), which makes them known.
MONAI has no such check; this is written here.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from pydoc import locate
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS, ID_SEP_KEY
from monai.bundle.workflows import ConfigWorkflow

__all__ = ["parse_overrides", "command_line_overrides", "unknown_override", "check_command_line"]

SPECIAL_KEYS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")
"""Keys MONAI's config parser reads on any component, whether the config file sets them or not."""


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``--key value`` pairs of a command line as config overrides, each value read as the bundle command line reads
    it: a Python literal if it is one (``[16,32,64,128]``, ``0.3``), ``true``/``false`` as booleans, else text.

    Raises ``ValueError`` (one line) for anything that is not ``--key value`` pairs."""
    if len(args) % 2 or any(not key.startswith("--") for key in args[::2]):
        raise ValueError(f"extra arguments must be --key value pairs, got {list(args)}")
    return {key[2:]: _literal(value) for key, value in zip(args[::2], args[1::2], strict=True)}


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"true": True, "false": False}.get(text.lower(), text)


def _workflow_arguments() -> set[str]:
    """Names that ``monai.bundle run`` takes as its own arguments, not as config overrides."""
    from monai.bundle.scripts import run

    names = set(inspect.signature(run).parameters) | set(inspect.signature(ConfigWorkflow.__init__).parameters)
    return (names | {"workflow_name"}) - {"self", "override"}


def command_line_overrides(argv: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(run arguments, overrides) of a ``python -m monai.bundle run ...`` command line, or None for any other
    command. Keys are read as python-fire reads them (``--key value``, ``--key=value``, ``--flag``); an
    ``--args_file`` is read too, its keys counting as given."""
    if len(argv) < 2 or Path(argv[0]).parts[-2:] != ("bundle", "__main__.py") or argv[1] != "run":
        return None
    given: dict[str, Any] = {}
    tokens = list(argv[2:])
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            continue
        key, sep, value = token[2:].partition("=")
        if not sep:
            value = tokens.pop(0) if tokens and not tokens[0].startswith("--") else "True"
        given[key] = value
    if given.get("args_file"):
        given = {**ConfigParser.load_config_file(given["args_file"]), **given}
    own = _workflow_arguments()
    run_args = {k.replace("-", "_"): v for k, v in given.items() if k.replace("-", "_") in own}
    return run_args, {k: v for k, v in given.items() if k.replace("-", "_") not in own}


def _all_ids(config: Any, prefix: str = "") -> Iterator[str]:
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        full = f"{prefix}{ID_SEP_KEY}{key}" if prefix else str(key)
        yield full
        yield from _all_ids(value, full)


def _accepts(parser: ConfigParser, parent: str, key: str) -> bool:
    """Whether ``key`` is a new argument that the component ``parent`` (a ``_target_`` dict) takes."""
    component = parser.get(parent) if parent in parser else None
    if key in SPECIAL_KEYS and isinstance(component, (dict, list)):
        return True
    if not isinstance(component, dict) or not isinstance(component.get("_target_"), str):
        return False
    target = component["_target_"]
    found = locate(target) or locate(f"monai.transforms.{target}") or locate(f"monai.engines.{target}")
    try:
        parameters = inspect.signature(found).parameters if found else {}
    except (TypeError, ValueError):
        return False
    return key in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def unknown_override(
    config_files: str | Sequence[str], overrides: Mapping[str, Any], tracking: Any = None
) -> str | None:
    """The one-line refusal of the first override id that ``config_files`` (merged in order) do not define, with the
    closest known id as a suggestion; None when all are known. A new argument of a component (``network_def#x``
    where the network takes ``x``) and MONAI's keys (``_disabled_``, ``_meta_#...``; the tracking settings with
    ``tracking``) count as known."""
    parser = ConfigParser()
    parser.read_config(f=config_files)
    known = set(_all_ids(parser.get()))
    if tracking:
        settings = DEFAULT_MLFLOW_SETTINGS if tracking == "mlflow" else tracking
        if isinstance(settings, str):
            settings = ConfigParser.load_config_file(settings)
        known |= set(settings.get("configs", {}))
    for override in overrides:
        normal = ReferenceResolver.normalize_id(override)
        if normal in known or normal.startswith("_meta_"):
            continue
        parent, _, key = normal.rpartition(ID_SEP_KEY)
        if parent and parent in known and _accepts(parser, parent, key):
            continue
        shown = sorted(known_id.replace(ID_SEP_KEY, "#") for known_id in known)  # the README's "a#b" form
        match = difflib.get_close_matches(override.replace(ID_SEP_KEY, "#"), shown, n=1, cutoff=0.6)
        return f"unknown config id {override!r}" + (f" (did you mean {match[0]!r}?)" if match else "")
    return None


def _config_files(value: Any) -> list[str]:
    """``--config_file`` as the command line gives it: one path or a list literal of paths."""
    if isinstance(value, str) and value.strip().startswith("["):
        return list(ast.literal_eval(value))
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_command_line(argv: Sequence[str] | None = None) -> str | None:
    """:func:`unknown_override` of this process's ``monai.bundle run`` command line (None for other commands)."""
    parsed = command_line_overrides(sys.argv if argv is None else argv)
    if parsed is None or not parsed[0].get("config_file"):
        return None
    run_args, overrides = parsed
    return unknown_override(_config_files(run_args["config_file"]), overrides, run_args.get("tracking"))
