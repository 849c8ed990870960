"""Orthanc, the research hospitals' open-source PACS, as the project runs it: loopback only, authentication on,
DICOMweb on, storage under one folder (``python -m apps.pacs orthanc --storage DIR``).

Orthanc itself is Debian's ``orthanc`` and ``orthanc-dicomweb`` packages; this module writes its JSON configuration
(Orthanc's own keys) and starts the server. The password comes from the environment or a file, never from the
command line; it is written only into the configuration file, which is created with mode 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

__all__ = ["ORTHANC", "PLUGINS", "orthanc_config", "write_config", "start_orthanc", "stop_process_group", "free_port"]

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
"""The Orthanc server of Debian's ``orthanc`` package."""
PLUGINS = "/usr/share/orthanc/plugins"
"""Where Debian's plugin packages put their libraries (``orthanc-dicomweb``: ``libOrthancDicomWeb.so``)."""


def orthanc_config(storage: Path, http_port: int, username: str, password: str, stable_age_s: int = 10) -> dict:
    """Orthanc's configuration: HTTP on ``http_port`` refusing remote hosts, the DICOM listener off (studies arrive
    through the REST API or DICOMweb), one registered user, DICOMweb at ``/dicom-web/``, a study stable after
    ``stable_age_s`` seconds without new instances (Orthanc's default is 60)."""
    return {
        "Name": "nigral-sbr-pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "StableAge": stable_age_s,
        "Plugins": [PLUGINS],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


def write_config(storage: Path, http_port: int, username: str, password: str, stable_age_s: int = 10) -> Path:
    """``storage/orthanc.json`` (mode 0600, it holds the password) for :func:`orthanc_config`; returns its path."""
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / "orthanc.json"
    config = orthanc_config(storage.resolve(), http_port, username, password, stable_age_s)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(config, handle, indent=2)
    return path


def start_orthanc(config: Path, log: Path) -> subprocess.Popen:
    """Start Orthanc on ``config`` in its own process group (stop it with :func:`stop_process_group`); its output to
    ``log``."""
    with open(log, "ab") as output:
        return subprocess.Popen([ORTHANC, str(config)], stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a server started with ``start_new_session=True`` by its process group: SIGTERM, then SIGKILL when it is
    still there after ``grace_s``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now, for a server started on loopback (Orthanc, MONAI Label)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
