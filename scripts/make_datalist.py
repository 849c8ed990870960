"""Build a datalist JSON (README "Your own cohort", full-volume form) from a folder of volumes and a CSV.

CSV columns (header row; extra columns are ignored):

- ``id``                                  patient id (unique)
- ``right_x, right_y, right_z``            nigrosome-1 centroid of the subject's right side
- ``left_x, left_y, left_z``               ... and of the left side
- ``space``                               ``voxel`` (indices into the stored array) or ``world`` (scanner RAS mm)
- ``sbr_right, sbr_left``                 striatal SBRs (required unless ``--unlabelled``)
- ``image`` (optional)                    path relative to ``--images``; default: ``{id}.nii.gz``, ``{id}.nii``
                                          or a DICOM series folder ``{id}/``
- ``fold`` (optional)                     ``0..K-1`` (cross-validation fold) or ``test``; used instead of a
                                          random split

Every row is validated - including, unless ``--skip-image-check``, loading the image and cropping both patches
exactly as the bundle will - and all problems are reported at once (one line each: ``id: field: problem``);
nothing is written if there is any. Splits are patient-level and seeded: ``training``/``validation``/``test``
with ``--split`` fractions (default 0.7 0.15 0.15), or with ``--kfold K`` (or a ``fold`` column) K files
``{output}_fold{k}.json``: validation = fold k, training = the other folds, test = the held-out test rows
(``--test-fraction`` of the patients when drawn at random). Labelled cases carry ``"fold"`` in k-fold files.

Usage (from the repository root)::

    python scripts/make_datalist.py --images /data/smwi --csv cohort.csv --output /data/datalist.json
    python -m bundle run training --config_file configs/train.json \\
        --datalist /data/datalist.json --dataset_dir /data/smwi
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data.datalist import SBR_KEYS, sbr_problem, validate_case  # noqa: E402

CENTROID_COLUMNS = {side: [f"{side}_{axis}" for axis in "xyz"] for side in ("right", "left")}
REQUIRED_COLUMNS = ["id", *CENTROID_COLUMNS["right"], *CENTROID_COLUMNS["left"], "space"]
IMAGE_SUFFIXES = (".nii.gz", ".nii")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _find_image(images: Path, case_id: str, given: str) -> tuple[Path | None, str | None]:
    """The image path of one row, or the problem."""
    if given:
        path = images / given
        return (path, None) if path.exists() else (None, f"file not found: {path}")
    found = [images / f"{case_id}{s}" for s in IMAGE_SUFFIXES if (images / f"{case_id}{s}").is_file()]
    if (images / case_id).is_dir():
        found.append(images / case_id)
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, f"no {case_id}.nii.gz, {case_id}.nii or DICOM folder {case_id}/ in {images}"
    return None, f"ambiguous: {', '.join(p.name for p in found)}; give an 'image' column"


def read_rows(csv_path: Path, images: Path, labelled: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Cases (absolute image paths, plus ``fold`` if given) and every problem found, one line each."""
    problems: list[str] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    required = REQUIRED_COLUMNS + (list(SBR_KEYS) if labelled else [])
    missing = [c for c in required if c not in header]
    if missing:
        return [], [f"{csv_path.name}: header: missing column(s) {', '.join(missing)} (has {', '.join(header)})"]
    cases, lines = [], {}
    for line, row in enumerate(rows, start=2):
        case_id = row["id"]
        if not case_id:
            problems.append(f"line {line}: id: missing")
            continue
        if case_id in lines:
            problems.append(f"{case_id}: id: duplicate (lines {lines[case_id]} and {line})")
            continue
        lines[case_id] = line
        row_problems = []
        case: dict[str, Any] = {"id": case_id}
        path, problem = _find_image(images, case_id, row.get("image", ""))
        if problem:
            row_problems.append(f"{case_id}: image: {problem}")
        case["image"] = str(path)
        for side, columns in CENTROID_COLUMNS.items():
            values = [_number(row[c]) for c in columns]
            for column, value in zip(columns, values, strict=True):
                if value is None:
                    row_problems.append(f"{case_id}: {column}: not a finite number: {row[column]!r}")
            case[f"centroid_{side}"] = values
        case["centroid_space"] = row["space"].lower()
        for key in SBR_KEYS:
            text = row.get(key, "")
            if not text:
                if labelled:
                    row_problems.append(f"{case_id}: {key}: {sbr_problem(None)}")
                continue
            value = _number(text)
            if problem := sbr_problem(text if value is None else value):
                row_problems.append(f"{case_id}: {key}: {problem}")
            case[key] = value
        fold = row.get("fold", "")
        if fold:
            if fold.lower() == "test":
                case["fold"] = "test"
            elif fold.isdigit():
                case["fold"] = int(fold)
            else:
                row_problems.append(f"{case_id}: fold: must be a non-negative integer or 'test', got {fold!r}")
        if not row_problems:  # field checks that need every field parsed (space, identical centroids...)
            row_problems = validate_case(case, require_sbr=labelled)
        problems += row_problems
        cases.append(case)
    if not rows:
        problems.append(f"{csv_path.name}: no rows")
    return cases, problems


def check_images(cases: Sequence[dict[str, Any]], dicom_reader: str = "itk") -> list[str]:
    """Load every image and crop both patches as the bundle does; the one-line error of each case that fails."""
    from bundle.data import LoadNigralPatchesd, error_message

    load = LoadNigralPatchesd(dicom_reader=dicom_reader)
    problems = []
    for case in cases:
        try:
            load(case)
        except (ValueError, OSError, RuntimeError) as err:
            problems.append(error_message(err))
    return problems


def split(cases: list[dict[str, Any]], fractions: Sequence[float], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Seeded patient-level training / validation / test split; rounded sizes for the first two."""
    import numpy as np

    n = len(cases)
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    order = np.random.default_rng(seed).permutation(n)
    bounds = (0, n_train, n_train + n_val, n)
    return {
        name: [cases[i] for i in sorted(order[bounds[k] : bounds[k + 1]])]
        for k, name in enumerate(("training", "validation", "test"))
    }


def kfold(cases: list[dict[str, Any]], k: int | None, test_fraction: float, seed: int) -> list[dict[str, list]]:
    """K datalists: validation = fold i, training = the other folds, test = the held-out test cases.

    Folds come from the cases' ``fold`` values if any case has one, else from a seeded shuffle (after drawing
    ``test_fraction`` of the patients as the test set).
    """
    import numpy as np

    if any("fold" in c for c in cases):
        if not all("fold" in c for c in cases):
            raise ValueError("fold: give a fold for every row or for none")
        folds = sorted({c["fold"] for c in cases if c["fold"] != "test"})
        k = k or len(folds)
        if folds != list(range(k)):
            raise ValueError(f"fold: values must be 0..{k - 1} (and 'test'), got {folds}")
        assigned = [dict(c) for c in cases]
    else:
        if not k:
            raise ValueError("kfold: give --kfold K or a fold column")
        order = np.random.default_rng(seed).permutation(len(cases))
        n_test = round(test_fraction * len(cases))
        assigned = [dict(c) for c in cases]
        for rank, i in enumerate(order):
            assigned[i]["fold"] = "test" if rank < n_test else (rank - n_test) % k
    if k < 2 or sum(c["fold"] != "test" for c in assigned) < k:
        raise ValueError(f"kfold: need K >= 2 and at least K non-test patients, got K={k}")
    test = [{key: v for key, v in c.items() if key != "fold"} for c in assigned if c["fold"] == "test"]
    return [
        {
            "training": [c for c in assigned if c["fold"] not in ("test", i)],
            "validation": [c for c in assigned if c["fold"] == i],
            "test": test,
        }
        for i in range(k)
    ]


def relative(cases: list[dict[str, Any]], dataset_dir: Path) -> list[dict[str, Any]]:
    """Image paths relative to ``dataset_dir`` where they lie under it (absolute otherwise)."""
    out = []
    for case in cases:
        path = Path(case["image"]).absolute()
        try:
            image = path.relative_to(dataset_dir.absolute()).as_posix()
        except ValueError:
            image = str(path)
        out.append({**case, "image": image})
    return out


def write_json(path: Path, content: dict) -> None:
    """Write atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, type=Path, help="folder of NIfTI files / DICOM series folders")
    parser.add_argument("--csv", required=True, type=Path, help="id, centroids, space, SBRs [, image, fold]")
    parser.add_argument("--output", required=True, type=Path, help="datalist JSON to write")
    parser.add_argument("--dataset-dir", type=Path, help="paths are written relative to it (default: --images)")
    parser.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--kfold", type=int, help="write K cross-validation datalists {output}_fold{k}.json")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="held-out test patients with --kfold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unlabelled", action="store_true", help="no SBRs: every case goes to 'test' (inference)")
    parser.add_argument("--skip-image-check", action="store_true", help="do not load images to check the crops")
    parser.add_argument("--dicom-reader", choices=("itk", "pydicom"), default="itk")
    args = parser.parse_args(argv)

    fractions = args.split
    if min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        parser.error(f"--split must be three non-negative fractions summing to 1, got {fractions}")
    cases, problems = read_rows(args.csv, args.images, labelled=not args.unlabelled)
    if not args.skip_image_check:
        bad = {p.split(":", 1)[0] for p in problems}
        problems += check_images([c for c in cases if c["id"] not in bad], args.dicom_reader)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s); no datalist written", file=sys.stderr)
        return 1

    dataset_dir = args.dataset_dir or args.images
    cases = relative(cases, dataset_dir)
    if args.unlabelled:
        outputs = {args.output: {"training": [], "validation": [], "test": cases}}
    elif args.kfold or any("fold" in c for c in cases):
        try:
            lists = kfold(cases, args.kfold, args.test_fraction, args.seed)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 1
        stem = args.output.name.removesuffix(".json")
        outputs = {args.output.with_name(f"{stem}_fold{i}.json"): d for i, d in enumerate(lists)}
    else:
        outputs = {args.output: split(cases, fractions, args.seed)}
    for path, content in outputs.items():
        write_json(path, content)
        sizes = ", ".join(f"{name} {len(section)}" for name, section in content.items())
        print(f"{path}: {sizes}")
    print(f"paths are relative to {dataset_dir}: run the bundle with --dataset_dir {dataset_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
