"""Start the MONAI Label server on this app: MONAI Label's own command line after one import alias.

``python -m apps.label start_server --app apps/label --studies DIR`` (from the repository root) runs
:class:`monailabel.main.Main` exactly as ``monailabel start_server`` does, with two differences: the server listens
on 127.0.0.1 unless ``--host`` says otherwise (MONAI Label's default is every interface), and before MONAI Label is
imported :func:`install_pydicom_alias` makes ``pydicom._storage_sopclass_uids`` a name of ``pydicom.uid``.

Why the alias: the server's endpoints import ``pydicom-seg`` (DICOM-SEG for OHIF / DICOMweb datastores), and its last
release, 0.4.1, does ``from pydicom._storage_sopclass_uids import SegmentationStorage``. pydicom 3 removed that
private module; the UID constants it held live in ``pydicom.uid`` with the same names and values. So plain
``monailabel start_server`` dies with ``ModuleNotFoundError: No module named 'pydicom._storage_sopclass_uids'``
before the app is loaded (the cause is that module, not pydicom-seg's ``numpy<2`` metadata, which ``--no-deps``
ignores).

Why it is safe: ``SegmentationStorage`` is the only name pydicom-seg takes from that module, and ``pydicom.uid``
defines it with the same value (``1.2.840.10008.5.1.4.1.1.66.4``); the alias is installed only when the real module
is missing, so with pydicom < 3 nothing changes. Under pydicom 3 and numpy 2, a DICOM-SEG written by MONAI Label's
own ``nifti_to_dicom_seg`` (pydicom-seg's ``MultiClassWriter``) from a two-label mask on an MR series and read back by
its ``dicom_seg_to_itk_image`` (``MultiClassReader``), and by ``SegmentReader`` per segment, gives back the identical
label array on the identical grid; ``tests/test_label_server.py`` checks that round trip.

This app's own task never writes DICOM-SEG: its label is NIfTI on the volume's grid (``output=image``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monailabel.main import Main

__all__ = ["ALIASED_MODULE", "DEFAULT_HOST", "install_pydicom_alias", "command_line", "main"]

ALIASED_MODULE = "pydicom._storage_sopclass_uids"
"""The private pydicom < 3 module that pydicom-seg 0.4.1 imports; made a name of ``pydicom.uid`` under pydicom 3."""

DEFAULT_HOST = "127.0.0.1"
"""Where the server listens without ``--host``: this machine only (give ``--host 0.0.0.0`` to serve a network)."""


def install_pydicom_alias() -> bool:
    """Make :data:`ALIASED_MODULE` importable as ``pydicom.uid`` when pydicom has no such module (pydicom 3);
    True when the alias was installed (now or before), False when the real module exists."""
    if sys.modules.get(ALIASED_MODULE) is not None:
        return sys.modules[ALIASED_MODULE].__name__ == "pydicom.uid"
    if importlib.util.find_spec(ALIASED_MODULE) is not None:
        return False
    import pydicom.uid

    sys.modules[ALIASED_MODULE] = pydicom.uid
    return True


def command_line() -> Main:
    """MONAI Label's :class:`~monailabel.main.Main` with one default changed, ``start_server``'s ``--host``
    (:data:`DEFAULT_HOST`), imported after :func:`install_pydicom_alias`."""
    install_pydicom_alias()
    from monailabel.main import Main

    class LoopbackMain(Main):
        def args_start_server(self, parser: argparse.ArgumentParser) -> None:
            super().args_start_server(parser)
            parser.set_defaults(host=DEFAULT_HOST)

    return LoopbackMain()


def main(argv: Sequence[str] | None = None) -> None:
    """MONAI Label's command line (``start_server``, ``apps``, ``datasets``, ``plugins``) on ``argv`` (default:
    ``sys.argv[1:]``), through :func:`command_line`. Returns when the server stops (Ctrl-C or SIGTERM)."""
    cli = command_line()
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli.run()
