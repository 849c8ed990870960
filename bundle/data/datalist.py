"""Reading a decathlon-style datalist (see DESIGN.md) and falling back to the embedded synthetic cohort."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["DEMO_SUBDIR", "PATH_KEYS", "load_cases", "resolve_datalist"]

DEMO_SUBDIR = "data/demo"
"""Where the synthetic demo cohort is generated, relative to the bundle root."""
PATH_KEYS = ("image", "patch_right", "patch_left", "mat")
"""Case fields holding paths relative to ``dataset_dir``."""

logger = logging.getLogger(__name__)


def resolve_datalist(datalist: str | os.PathLike, bundle_root: str | os.PathLike = ".") -> str:
    """Return ``datalist`` as a path, generating the synthetic demo cohort first if it is the (missing) default.

    The demo cohort lives in ``{bundle_root}/data/demo`` and is generated on first use only; any other missing
    datalist is an error.
    """
    path = Path(datalist)
    demo_dir = Path(bundle_root) / DEMO_SUBDIR
    if path.is_file():
        return str(path)
    if path.resolve().parent == demo_dir.resolve() and path.name == "datalist.json":
        from bundle.data.cohort import ensure_demo_cohort

        logger.info("no datalist at %s: generating the synthetic demo cohort there (one-off)", path)
        return str(ensure_demo_cohort(demo_dir))
    raise FileNotFoundError(f"datalist not found: {path}")


def load_cases(
    datalist: str | os.PathLike, section: str, dataset_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Cases of one ``section`` (``training``, ``validation``, ``test``) with paths made absolute.

    Relative paths are resolved against ``dataset_dir`` (default: the datalist's folder). Raises a one-line
    ``ValueError`` for malformed JSON, a missing section, a case without ``id`` or duplicate ids.
    """
    path = Path(datalist)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(content, dict) or section not in content:
        sections = sorted(content) if isinstance(content, dict) else []
        raise ValueError(f"datalist {path}: no section {section!r} (has {sections})")
    if not isinstance(content[section], list):
        raise ValueError(f"datalist {path}: section {section!r} must be a list of cases")
    base = Path(dataset_dir) if dataset_dir is not None else path.parent
    cases, seen = [], set()
    for i, raw in enumerate(content[section]):
        if not isinstance(raw, dict) or not raw.get("id"):
            raise ValueError(f"datalist {path}: {section}[{i}] has no 'id'")
        case_id = str(raw["id"])
        if case_id in seen:
            raise ValueError(f"datalist {path}: duplicate id {case_id!r} in {section!r}")
        seen.add(case_id)
        case = dict(raw, id=case_id)
        for key in PATH_KEYS:
            if isinstance(case.get(key), str):
                case[key] = str(base / case[key])
        cases.append(case)
    return cases
