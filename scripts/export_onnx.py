"""Export the trained paired model to ONNX (``model.onnx``) and check it against PyTorch.

Input ``image`` [batch, 2, 50, 50, 20] float32 (mirrored right patch, left patch), output ``pred`` [batch, 2]
normalised SBR, dynamic batch; the merged config with any overrides, ``metadata.json`` and the network's arguments are
stored in the model's ``metadata_props``. Extra ``--key value`` pairs are config overrides, as for the bundle's
workflows. After the export, onnxruntime and PyTorch run the same 3 random pairs: the largest absolute difference is
printed, and above 1e-5 it is an error and the file is not written (an earlier one stays). ``--mc`` is refused: MC
dropout intervals need PyTorch or TorchScript (docs/integrations/onnx.md).

Usage (from the repository root)::

    python scripts/export_onnx.py [--ckpt models/model.pt] [--out models/model.onnx] \\
        [--config_file configs/inference.json ...] [--key value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bundle.data.readers import error_message  # noqa: E402
from bundle.export import onnx as onnx_export  # noqa: E402
from bundle.io import TEMP_SUFFIX  # noqa: E402
from bundle.workflows.overrides import parse_overrides, unknown_override  # noqa: E402

TOLERANCE = 1e-5
"""Largest accepted absolute difference between onnxruntime and PyTorch (normalised SBR)."""
CHECK_PAIRS = 3


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt_path",
        "--ckpt",
        dest="ckpt",
        default=str(REPO / "models" / "model.pt"),
        help="trained weights (model.pt)",
    )
    parser.add_argument("--out", "--filepath", dest="out", default=str(REPO / "models" / "model.onnx"),
                        help="ONNX file to write")  # fmt: skip
    parser.add_argument("--config_file", nargs="+", default=[str(REPO / "configs" / "inference.json")],
                        help="config files, layered in order (default configs/inference.json)")  # fmt: skip
    parser.add_argument("--meta_file", default=str(REPO / "configs" / "metadata.json"))
    parser.add_argument("--mc", action="store_true", help="refused: MC dropout intervals need PyTorch/TorchScript")
    args, rest = parser.parse_known_args(argv)
    if args.mc:
        return fail(onnx_export.MC_REFUSAL)
    try:
        overrides = parse_overrides(rest)
    except ValueError as err:
        return fail(str(err))
    if problem := unknown_override(args.config_file, overrides):
        return fail(problem)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        model, config = onnx_export.paired_network(args.ckpt, args.config_file, overrides)
        onnx_export.export_onnx(tmp, args.ckpt, args.config_file, overrides, meta_file=args.meta_file)
        pairs = 2 * torch.rand(CHECK_PAIRS, 2, *config["patch_size"], generator=torch.Generator().manual_seed(0))
        difference = onnx_export.max_abs_difference(tmp, model, pairs)
        print(f"max abs difference onnxruntime vs PyTorch on {CHECK_PAIRS} random pairs: {difference:.3g}")
        if not difference <= TOLERANCE:
            return fail(f"onnxruntime differs from PyTorch by {difference:.3g} > {TOLERANCE:g}; {out} not written", 1)
        os.replace(tmp, out)
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        return fail(error_message(err) if not isinstance(err, ImportError) else str(err))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    print(f"wrote {out} (config with overrides {overrides or 'none'} in its metadata_props)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
