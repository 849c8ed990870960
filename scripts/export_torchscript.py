"""Export the trained network to TorchScript (``model.ts``) with the configuration it was exported with.

A wrapper of MONAI's ``ckpt_export`` whose ``extra/inference.json`` also holds the command line overrides (MONAI's
own command stores the config files only). Extra ``--key value`` pairs are config overrides, as for the bundle's
workflows (e.g. ``--network_def#channels "[16,32,64,128]"`` for a demo-width model).

Usage (from the repository root)::

    python scripts/export_torchscript.py [--ckpt models/model.pt] [--filepath models/model.ts] \\
        [--config_file configs/inference.json ...] [--key value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle.export.torchscript import export_torchscript  # noqa: E402
from bundle.workflows.overrides import parse_overrides  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt_path",
        "--ckpt",
        dest="ckpt",
        default=str(REPO / "models" / "model.pt"),
        help="trained weights (model.pt)",
    )
    parser.add_argument("--filepath", default=str(REPO / "models" / "model.ts"), help="TorchScript file to write")
    parser.add_argument("--config_file", nargs="+", default=[str(REPO / "configs" / "inference.json")],
                        help="config files, layered in order (default configs/inference.json)")  # fmt: skip
    parser.add_argument("--meta_file", default=str(REPO / "configs" / "metadata.json"))
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = parse_overrides(rest)
    except ValueError as err:
        parser.error(str(err))
    path = export_torchscript(args.filepath, args.ckpt, args.config_file, args.meta_file, overrides)
    print(f"wrote {path} (config with overrides {overrides or 'none'} in extra/inference.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
