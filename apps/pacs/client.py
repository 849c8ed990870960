"""The few calls of Orthanc's REST API the router makes, over ``requests`` (with the credentials of
:func:`credentials`), each with a timeout."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

__all__ = ["credentials", "OrthancClient"]

TIMEOUT_S = 60


def credentials(file: str | os.PathLike | None = None) -> tuple[str, str]:
    """(user, password): ``ORTHANC_USERNAME`` and ``ORTHANC_PASSWORD`` from the environment, else the first line
    ``user:password`` of ``file``; never a command-line argument, so they do not show in process lists or logs."""
    user, password = os.environ.get("ORTHANC_USERNAME"), os.environ.get("ORTHANC_PASSWORD")
    if user and password:
        return user, password
    if file is None:
        raise ValueError("no Orthanc credentials: set ORTHANC_USERNAME and ORTHANC_PASSWORD, or give --credentials")
    line = Path(file).read_text().splitlines()[0] if Path(file).is_file() else ""
    user, sep, password = line.partition(":")
    if not (sep and user and password):
        raise ValueError(f"{file}: expected one line user:password")
    return user, password


class OrthancClient:
    """Orthanc at ``url`` (e.g. ``http://127.0.0.1:8042``) with HTTP basic authentication."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = auth

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.25) -> bool:
        """Whether ``/system`` answers within ``timeout_s`` (a server just started; bounded in time and count)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / poll_s) + 1):
            try:
                self.get("/system")
                return True
            except requests.RequestException:
                if time.monotonic() > deadline:
                    break
                time.sleep(poll_s)
        return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(f"{self.url}{path}", params=params, timeout=TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    def changes(self, since: int, limit: int = 100) -> dict[str, Any]:
        """Orthanc's ``/changes`` feed after sequence number ``since``."""
        return self.get("/changes", since=since, limit=limit)

    def study(self, study_id: str) -> dict[str, Any]:
        return self.get(f"/studies/{study_id}")

    def series(self, series_id: str) -> dict[str, Any]:
        return self.get(f"/series/{series_id}")

    def download_series(self, series_id: str, folder: Path) -> Path:
        """The series' instances as DICOM files in ``folder`` (Orthanc's ZIP archive of the series, unpacked)."""
        response = self.session.get(f"{self.url}/series/{series_id}/archive", timeout=TIMEOUT_S * 5)
        response.raise_for_status()
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            for index, name in enumerate(n for n in archive.namelist() if not n.endswith("/")):
                (folder / f"{index:05d}.dcm").write_bytes(archive.read(name))
        return folder

    def store(self, path: Path) -> dict[str, Any]:
        """POST one DICOM file to ``/instances``; Orthanc's answer (``ID``, ``ParentStudy``, ...)."""
        response = self.session.post(f"{self.url}/instances", data=path.read_bytes(), timeout=TIMEOUT_S)
        response.raise_for_status()
        return response.json()
