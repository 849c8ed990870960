"""Write ``large_files.yml``: each shipped file's path, its sha256, and the URL it was uploaded under, if any.

The repository commits its synthetic-data demo models (``models/model.pt``, ``calibration.json``, ``localiser.pt``;
``bundles/*/models/model.pt``) and lists them with their hashes (docs/integrations/model_zoo.md)::

    python scripts/publish_model.py
    python scripts/publish_model.py --bundle-root bundles/dat_spect --files models/model.pt

Such committed entries have an empty ``url``: MONAI's ``download_large_files`` finds the file, checks its hash and
skips downloading. For weights you host elsewhere (e.g. the assets of a GitHub release), give the prefix they were
uploaded under::

    python scripts/publish_model.py --url-base https://github.com/OWNER/REPO/releases/download/v0.12.0

Each file's URL is then ``--url-base`` + ``/`` + its file name; its hash is computed from the local file, so upload
exactly these bytes. Entries of other paths already in ``large_files.yml`` are kept; those of the given files are
replaced.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle.io import write_text  # noqa: E402

HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
"""The hash types of MONAI's ``download_url`` (``monai.apps.utils.SUPPORTED_HASH_TYPES``)."""
URL_SCHEMES = ("https", "http", "file")
DEFAULT_FILES = ("models/model.pt", "models/calibration.json", "models/localiser.pt")
"""The root bundle's shipped files."""
HEADER = """\
# Large files of this bundle: where to download them and the hash of the published bytes. MONAI fetches missing
# files and checks every hash with
#   python -m monai.bundle download_large_files --bundle_path .
# Written by scripts/publish_model.py; see docs/integrations/model_zoo.md. An entry with an empty url is committed
# with the repository (MONAI checks its hash and skips downloading). The models are synthetic-data demo models, for
# research use only: they say nothing about real scans; docs/README.md says how each was made.
"""


def file_hash(path: str | os.PathLike, hash_type: str = "sha256") -> str:
    """Hex digest of the file at ``path`` (read in 1 MiB chunks), as MONAI's ``check_hash`` computes it."""
    digest = hashlib.new(hash_type)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def large_file_entry(bundle_root: Path, path: str, url_base: str | None, hash_type: str = "sha256") -> dict[str, str]:
    """The ``large_files.yml`` entry of ``path`` (relative to ``bundle_root``): path, url (empty for a file committed
    with the repository, ``url_base`` None), hash_val, hash_type."""
    target = (bundle_root / path).resolve()
    if not target.is_relative_to(bundle_root.resolve()):
        raise ValueError(f"{path}: not inside the bundle root {bundle_root}")
    if not target.is_file():
        raise FileNotFoundError(f"{path}: no such file under {bundle_root} (train and export first)")
    relative = target.relative_to(bundle_root.resolve()).as_posix()
    url = "" if url_base is None else f"{url_base.rstrip('/')}/{quote(target.name)}"
    return {"path": relative, "url": url, "hash_val": file_hash(target, hash_type), "hash_type": hash_type}


def read_entries(path: Path) -> list[dict[str, Any]]:
    """The ``large_files`` list of an existing ``large_files.yml`` (empty when there is no file)."""
    if not path.is_file():
        return []
    content = yaml.safe_load(path.read_text()) or {}
    entries = content.get("large_files") or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'large_files' must be a list")
    return entries


def publish(
    url_base: str | None,
    bundle_root: str | os.PathLike = REPO,
    files: Sequence[str] = DEFAULT_FILES,
    output: str | os.PathLike | None = None,
    hash_type: str = "sha256",
) -> list[dict[str, Any]]:
    """Write (or refresh) ``output`` (default ``bundle_root/large_files.yml``) with the entries of ``files``
    (committed files where ``url_base`` is None); returns the entries written."""
    if url_base is not None and urlparse(url_base).scheme not in URL_SCHEMES:
        raise ValueError(f"--url-base must start with one of {', '.join(s + '://' for s in URL_SCHEMES)}: {url_base}")
    if hash_type not in HASH_TYPES:
        raise ValueError(f"hash type {hash_type!r}: MONAI supports {', '.join(HASH_TYPES)}")
    root = Path(bundle_root)
    target = Path(output) if output is not None else root / "large_files.yml"
    new = [large_file_entry(root, path, url_base, hash_type) for path in files]
    replaced = {entry["path"] for entry in new}
    entries = [entry for entry in read_entries(target) if entry.get("path") not in replaced] + new
    write_text(target, HEADER + yaml.safe_dump({"large_files": entries}, sort_keys=False))
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url-base", default=None, help="URL prefix the files were uploaded under (none: committed)")
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="paths relative to the bundle root")
    parser.add_argument("--bundle-root", default=str(REPO), help="bundle directory (default: this repository)")
    parser.add_argument("--output", default=None, help="file to write (default BUNDLE_ROOT/large_files.yml)")
    parser.add_argument("--hash-type", default="sha256", choices=HASH_TYPES)
    args = parser.parse_args(argv)
    try:
        entries = publish(args.url_base, args.bundle_root, args.files, args.output, args.hash_type)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    for entry in entries:
        print(f"{entry['path']}: {entry['url'] or 'committed'} ({entry['hash_type']} {entry['hash_val']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
