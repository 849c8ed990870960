"""Safe output files: atomic writes (temporary file, then rename), file names derived from case ids, paths kept
inside the output folder, spreadsheet-safe CSV cells, and the clean-up of what an interrupted run left."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_SUFFIX",
    "atomic_open",
    "write_text",
    "write_json",
    "write_csv",
    "spreadsheet_safe",
    "unescape_cell",
    "safe_file_stem",
    "inside",
    "remove_stale_temporaries",
    "staged_outputs",
]

TEMP_SUFFIX = ".tmp"
"""Suffix of the hidden temporary files (``.{name}.*.tmp``) that :func:`atomic_open` renames into place."""
MAX_STEM_BYTES = 120
"""Longest file-name stem derived from a case id, in UTF-8 bytes (file systems allow 255 per name)."""
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""Cell starts that spreadsheet programs read as a formula (OWASP "CSV injection")."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing and rename it to ``path`` only if the block succeeds.

    A crash or exception inside the block leaves any previous ``path`` untouched and no partial file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def file_sha256(path: str | os.PathLike | None) -> str | None:
    """SHA-256 hex digest of a file's bytes, or None when there is no such file (e.g. no calibration yet)."""
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (starts with ``= + - @``, tab or CR) gets a leading
    apostrophe, as spreadsheet-safe exports do; numbers, also as text (``"-0.2"``, read back from a CSV), and other
    text are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text


def unescape_cell(value: str) -> str:
    """The text of a cell written by :func:`spreadsheet_safe` (its leading apostrophe removed)."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES) else value


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """CSV with a header row; missing or ``None`` values are written as empty cells, text cells spreadsheet-safe."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else spreadsheet_safe(row[c]) for c in columns})
    write_text(path, buffer.getvalue())


def safe_file_stem(case_id: str) -> str:
    """The file-name stem of a case's outputs: the id with every character but letters, digits and ``. _ -`` replaced
    by ``_``, leading dots dropped (no hidden files, no ``..``), at most :data:`MAX_STEM_BYTES` UTF-8 bytes.

    Raises ``ValueError`` when nothing usable is left (e.g. an id of dots only). Two ids can give the same stem;
    the writers report the second as an error.
    """
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in str(case_id))
    stem = stem.lstrip(".")
    while len(stem.encode()) > MAX_STEM_BYTES:
        stem = stem[:-1]
    if not stem.strip("_"):
        raise ValueError(f"{case_id}: id: gives no usable file name; use letters, digits, '.', '_' or '-'")
    return stem


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts``, checked to resolve inside ``root`` (symbolic links followed); ``ValueError`` otherwise."""
    base = Path(root).resolve()
    path = base.joinpath(*parts)
    if not path.resolve().is_relative_to(base):
        raise ValueError(f"output path {path} resolves outside {base}")
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what an interrupted run left in ``folder``: hidden temporary files (``.*.tmp``, also in sub-folders)
    and the hidden staging folders of :func:`staged_outputs`. Returns what was removed."""
    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for path in root.glob(f".run-*{TEMP_SUFFIX}"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path)
    for path in root.rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_outputs(output_dir: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden staging folder inside ``output_dir`` for one run's outputs.

    When the block succeeds, each top-level entry of the staging folder replaces the entry of the same name in
    ``output_dir`` (the previous one is moved aside first, then deleted), so a reader never finds one run's
    ``predictions.csv`` beside another run's per-patient files. When the block fails, or the process is killed,
    ``output_dir`` keeps the previous run's outputs untouched; the staging folder is deleted then, or by the next
    run (:func:`remove_stale_temporaries`).
    """
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    staging = root / f".run-{run_id}.partial{TEMP_SUFFIX}"
    staging.mkdir()
    try:
        yield staging
        aside = root / f".run-{run_id}.old{TEMP_SUFFIX}"
        aside.mkdir()
        for entry in sorted(staging.iterdir()):
            target = root / entry.name
            if target.exists() or target.is_symlink():
                os.replace(target, aside / entry.name)
            os.replace(entry, target)
        shutil.rmtree(aside)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
