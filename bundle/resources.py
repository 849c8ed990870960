"""Where the bundle's own files are: the ``configs/`` of a source checkout, or the copy an installed package ships.

The repository keeps the MONAI bundle layout (``configs/``, ``models/`` at its root); a wheel carries ``configs/``
as package data in ``bundle/bundle_data/configs`` (``pyproject.toml``), so an installed package is a bundle root
too, without models.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PACKAGE_DATA", "LARGE_FILES", "bundle_root", "config_path", "shipped_files", "not_shipped"]

_PACKAGE = Path(__file__).resolve().parent
PACKAGE_DATA = _PACKAGE / "bundle_data"
"""An installed package's bundle root: ``configs/`` (the repository's ``configs/`` as package data), no models."""
LARGE_FILES = "large_files.yml"
"""The list of a bundle's shipped files (path, url, sha256), as the model zoo and MONAI's ``download_large_files``
read it; the root bundle and each companion bundle have one at their root."""


def bundle_root() -> Path:
    """The bundle's root folder, the one holding ``configs/``: the repository root of a source checkout (found by
    its ``configs/inference.json`` beside the package), else :data:`PACKAGE_DATA` of the installed package.

    ``<root>/models`` is the default models folder of a source checkout only. An installed package ships no models:
    give the folder of yours (``--bundle_root`` or ``--ckpt_path`` of the workflows, ``-m`` of the Deploy app,
    ``models`` of the Label app, ``ckpt_path`` and ``localiser_path`` of :func:`bundle.serving.case.predict_case`).
    """
    checkout = _PACKAGE.parent
    return checkout if (checkout / "configs" / "inference.json").is_file() else PACKAGE_DATA


def config_path(name: str) -> Path:
    """``configs/<name>`` of :func:`bundle_root`, e.g. ``config_path("inference.json")``."""
    return bundle_root() / "configs" / name


def shipped_files(root: str | os.PathLike) -> dict[Path, str]:
    """The files that the bundle at ``root`` ships (its :data:`LARGE_FILES` entries) by absolute path, with their
    sha256; empty where the bundle has no such list."""
    listing = Path(root) / LARGE_FILES
    if not listing.is_file():
        return {}
    import yaml  # here, not at the top: this module stays importable without site-packages (tests/test_packaging.py)

    entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files") or []
    return {(Path(root) / e["path"]).resolve(): e.get("hash_val", "") for e in entries}


def not_shipped(path: str | os.PathLike, option: str) -> str:
    """``path``, where a run may write it; a shipped file (listed in the :data:`LARGE_FILES` of the bundle whose
    ``models/`` holds it) raises ``ValueError`` naming the override to use, so that training or calibration never
    replaces a shipped demo model silently."""
    target = Path(path).resolve()
    if target in shipped_files(target.parent.parent):
        raise ValueError(
            f"{path} is a shipped demo file (listed in {LARGE_FILES}); this run writes its own: give another {option}"
        )
    return str(path)
