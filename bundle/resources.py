"""Where the bundle's own files are: the ``configs/`` of a source checkout, or the copy an installed package ships.

The repository keeps the MONAI bundle layout (``configs/``, ``models/`` at its root); a wheel carries ``configs/``
as package data in ``bundle/bundle_data/configs`` (``pyproject.toml``), so an installed package is a bundle root
too, without models.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE_DATA", "bundle_root", "config_path"]

_PACKAGE = Path(__file__).resolve().parent
PACKAGE_DATA = _PACKAGE / "bundle_data"
"""An installed package's bundle root: ``configs/`` (the repository's ``configs/`` as package data), no models."""


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
