"""Predict the right and left striatal SBR of one patient with intervals (research use only).

A thin wrapper over ``configs/inference.json``: it writes a one-case datalist, runs the bundle's inference
workflow and prints the row of ``predictions.csv``. The network is built as the checkpoint records it (no width
override needed for the demo model). ``--config_file`` layers more config files on inference.json; extra
``--key value`` pairs are config overrides (e.g. ``--dicom_reader pydicom``), refused when no config defines them.

Usage (from the repository root)::

    python scripts/predict.py --image subject.nii.gz --right 84 47 16 --left 31 50 16 [--space voxel|world]
    python scripts/predict.py --image subject.nii.gz     # centroids from the localiser (models/localiser.pt)
    python scripts/predict.py --mat case.mat
    python scripts/predict.py --image dicom_folder/ --right 10.5 -18 -9 --left -11 -17.5 -9 --space world \\
        --ckpt_path models/model.pt --mc_samples 100

The options are named as the workflows' ids (``--ckpt_path``, ``--mc_samples``, ``--output_dir``; ``--ckpt``,
``--mc-samples`` and ``--output-dir`` are accepted too); an override of an id this script sets itself (``--section``,
``--datalist``, ``--dataset_dir``, ``--bundle_root``) is refused in one line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle.constants import MC_SAMPLES  # noqa: E402
from bundle.serving.case import SET_PER_CASE  # noqa: E402
from bundle.workflows.overrides import parse_overrides, unknown_override  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="NIfTI file or DICOM series folder of the SMWI volume")
    source.add_argument("--mat", help=".mat file with right_patch / left_patch (original release layout)")
    parser.add_argument("--right", nargs=3, type=float, metavar=("X", "Y", "Z"), help="right nigrosome-1 centroid")
    parser.add_argument("--left", nargs=3, type=float, metavar=("X", "Y", "Z"), help="left nigrosome-1 centroid")
    parser.add_argument("--space", choices=("voxel", "world"), default="voxel", help="centroid coordinates")
    parser.add_argument("--id", default="patient", help="case id used in messages and outputs")
    parser.add_argument("--ckpt_path", "--ckpt", default=str(REPO / "models" / "model.pt"), help="model.pt or model.ts")
    parser.add_argument("--mc_samples", "--mc-samples", type=int, default=MC_SAMPLES, help="0: deterministic")
    parser.add_argument(
        "--output_dir", "--output-dir", help="keep the outputs (predictions.csv, patient JSON/PNG) here"
    )
    parser.add_argument("--config_file", nargs="+", default=[], help="config files layered on inference.json")
    args, rest = parser.parse_known_args(argv)
    if args.image and (args.right is None) != (args.left is None):
        parser.error("give both --right and --left, or neither (the localiser finds them)")
    try:
        overrides = parse_overrides(rest)
    except ValueError as err:
        parser.error(str(err))
    if problem := unknown_override(config_files(args), overrides):
        parser.error(problem)
    if clashes := sorted(SET_PER_CASE & set(overrides)):
        parser.error(
            f"{', '.join('--' + key for key in clashes)}: set by predict.py itself (one case), not an override"
        )
    return args, overrides


def config_files(args: argparse.Namespace) -> list[str]:
    """inference.json, then the ``--config_file`` overlays."""
    return [str(REPO / "configs" / "inference.json"), *(str(Path(f).resolve()) for f in args.config_file)]


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    from bundle.serving.case import CaseFailed, predict_case

    case: dict = {"id": args.id}
    if args.image and args.right is None:  # no centroids: models/localiser.pt finds them
        case |= {"image": str(Path(args.image).resolve()), "centroid_space": "auto"}
    elif args.image:
        coords = [int(round(c)) for c in args.right + args.left] if args.space == "voxel" else args.right + args.left
        case |= {"image": str(Path(args.image).resolve()), "centroid_space": args.space,
                 "centroid_right": coords[:3], "centroid_left": coords[3:]}  # fmt: skip
    else:
        case["mat"] = str(Path(args.mat).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output_dir) if args.output_dir else Path(tmp) / "out"
        try:
            prediction = predict_case(
                case, out, args.ckpt_path, args.mc_samples, config_files(args)[1:], overrides, bundle_root=REPO
            )
        except CaseFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    row = prediction.record
    print(f"{args.id} (research use only; not for clinical decisions; centroids: {row['centroid_source']})")
    for side in ("right", "left"):
        low, high = row.get(f"low_{side}"), row.get(f"high_{side}")
        interval = f"  [{low}, {high}]" if low not in (None, "") else ""
        flag = "abnormal" if row[f"abnormal_{side}"] else "normal"
        print(f"  {side:5s} SBR {float(row[f'sbr_{side}']):.2f}{interval}  ({flag})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
