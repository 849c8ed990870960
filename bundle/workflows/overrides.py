"""Command-line overrides: refuse ids that no config defines, and read ``true``/``false`` as booleans.

``python -m monai.bundle run`` accepts any ``--id value`` and *adds* an id it does not know, so a typo such as
``--num_epoch 2`` is silently ignored and the run trains for the configured ``num_epochs``; and python-fire passes
``--amp false`` on as the text ``'false'``. :class:`CheckedConfigWorkflow` is MONAI's ``ConfigWorkflow`` with both
fixed: it is the one object that sees the config files and the overrides apart, so it compares every override id
with the ids of the merged files (:func:`unknown_override`) and turns ``true``/``false`` text into a boolean where
the files define a boolean (:func:`read_booleans`), before anything is built. ``python -m bundle run ...`` (the
README's commands) runs it, as does MONAI's own command line given
``--workflow_name bundle.workflows.overrides.CheckedConfigWorkflow``. Deliberate new ids belong in an extra config
file layered last (``--config_file "['configs/train.json','my_ids.json']"``), which makes them known. MONAI has no
such check; this is written here.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from pydoc import locate
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS, ID_SEP_KEY
from monai.bundle.workflows import ConfigWorkflow

from bundle.workflows.preflight import stop
from bundle.workflows.setup import BOOLEAN_WORDS

__all__ = ["parse_overrides", "unknown_override", "read_booleans", "CheckedConfigWorkflow"]

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
    return _unknown_in(parser, overrides, tracking)


def _unknown_in(parser: ConfigParser, overrides: Mapping[str, Any], tracking: Any = None) -> str | None:
    """:func:`unknown_override` against the already merged config files in ``parser``."""
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


def read_booleans(config: ConfigParser, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with each ``true``/``false``/``yes``/``no``/``on``/``off``/``1``/``0`` text turned into a boolean
    where ``config`` (the merged files) holds a boolean under that id; other values unchanged."""
    read = dict(overrides)
    for key, value in overrides.items():
        normal = ReferenceResolver.normalize_id(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and normal in config:
            if isinstance(config.get(normal), bool) and str(value).strip().lower() in BOOLEAN_WORDS:
                read[key] = BOOLEAN_WORDS[str(value).strip().lower()]
    return read


class CheckedConfigWorkflow(ConfigWorkflow):
    """MONAI's ``ConfigWorkflow`` that refuses an override id no config file defines (one line, exit code 2) and
    reads ``true``/``false`` overrides of boolean ids as booleans. Arguments: those of ``ConfigWorkflow``."""

    def __init__(self, config_file: str | Sequence[str], tracking: Any = None, **kwargs: Any) -> None:
        own = set(inspect.signature(ConfigWorkflow.__init__).parameters) - {"self", "override", "config_file"}
        arguments = {key: value for key, value in kwargs.items() if key in own}
        override = {key: value for key, value in kwargs.items() if key not in own}
        files = ConfigParser()  # the files alone, read once for both checks
        files.read_config(f=config_file)
        if (problem := _unknown_in(files, override, tracking)) is not None:
            stop(problem)
        super().__init__(config_file, tracking=tracking, **arguments, **read_booleans(files, override))
