"""Reading and validating a decathlon-style datalist (docs/data.md), falling back to the embedded synthetic cohort.

A case is one patient in one of three forms (:func:`case_form`): a full ``image`` (NIfTI file or DICOM series
folder) with ``centroid_right``/``centroid_left`` in ``centroid_space`` ``"voxel"`` or ``"world"``; a pair of
``patch_right``/``patch_left`` files; or a MATLAB ``mat`` pair. :func:`validate_case` lists every problem of a
case as one line ``"{id}: {field}: ..."``; :func:`load_cases` checks the datalist's structure and, with
``validate=True``, every case of the section at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_SUBDIR",
    "WIDE_DEMO_SUBDIR",
    "PATH_KEYS",
    "SBR_KEYS",
    "SBR_RANGE",
    "LABELLED_SECTIONS",
    "case_form",
    "sbr_problem",
    "validate_case",
    "case_path",
    "load_cases",
    "resolve_datalist",
]

DEMO_SUBDIR = "data/demo"
WIDE_DEMO_SUBDIR = "data/demo_wide"
"""The wide-field demo cohort (generator 2.x) the localiser trains on by default."""
"""Where the synthetic demo cohort is generated, relative to the bundle root."""
PATH_KEYS = ("image", "patch_right", "patch_left", "mat")
"""Case fields holding paths relative to ``dataset_dir``."""
CENTROID_KEYS = ("centroid_right", "centroid_left")
SBR_KEYS = ("sbr_right", "sbr_left")
SBR_RANGE = (0.0, 20.0)
"""Plausible striatal SBR values; anything outside is a data-entry error (the paper's maximum is 6.84)."""
CENTROID_SPACES = ("voxel", "world")
FORMS = {"volume": ("image",), "patches": ("patch_right", "patch_left"), "mat": ("mat",)}
"""Case forms and the path fields that define them."""
LABELLED_SECTIONS = ("training", "validation")
"""Sections whose cases need both SBRs (training targets, validation metrics and calibration)."""

logger = logging.getLogger(__name__)


def resolve_datalist(datalist: str | os.PathLike, bundle_root: str | os.PathLike = ".") -> str:
    """Return ``datalist`` as a path, generating the synthetic demo cohort first if it is the (missing) default.

    The demo cohort lives in ``{bundle_root}/data/demo`` (the wide-field one in ``data/demo_wide``) and is generated
    on first use, and again only when the generator version or its parameters change; any other missing datalist is
    an error.
    """
    path = Path(datalist)
    for subdir, field in ((DEMO_SUBDIR, "slab"), (WIDE_DEMO_SUBDIR, "wide")):
        demo_dir = Path(bundle_root) / subdir
        if path.resolve().parent == demo_dir.resolve() and path.name == "datalist.json":
            if not path.is_file():
                logger.info("no datalist at %s: generating the synthetic %s demo cohort there (one-off)", path, field)
            from bundle.synthetic import smwi_cohort  # the generator, imported on first use only

            return str(smwi_cohort.ensure_demo_cohort(demo_dir, field=field))  # also replaces an older generator's
    if path.is_file():
        return str(path)
    raise FileNotFoundError(f"datalist not found: {path}")


def case_form(case: Mapping[str, Any]) -> str:
    """``"volume"`` (``image`` + centroids), ``"patches"`` (``patch_right`` + ``patch_left``) or ``"mat"``.

    Raises a one-line ``ValueError`` when the case has none of them or more than one.
    """
    forms = [form for form, keys in FORMS.items() if any(case.get(k) is not None for k in keys)]
    case_id = case.get("id", "<no id>")
    if not forms:
        raise ValueError(
            f"{case_id}: image: no input; give 'image' (+ centroids), 'patch_right' + 'patch_left', or 'mat'"
        )
    if len(forms) > 1:
        fields = " and ".join(FORMS[f][0] for f in forms)
        raise ValueError(f"{case_id}: {FORMS[forms[1]][0]}: give one input form per case, not {fields}")
    return forms[0]


def sbr_problem(value: Any) -> str | None:
    """Why ``value`` is not a plausible SBR (a finite number in :data:`SBR_RANGE`), or ``None`` if it is."""
    if value is None:
        return "missing; labelled cases need a number for both SBRs"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, got {value!r}"
    lo, hi = SBR_RANGE
    if not math.isfinite(value) or not lo <= value <= hi:
        return f"{value:g} is outside the plausible SBR range [{lo:g}, {hi:g}]"
    return None


def _centroid_problem(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return f"must be 3 numbers [x, y, z], got {value!r}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return f"must be 3 finite numbers, got {value!r}"
    return None


def validate_case(case: Mapping[str, Any], require_sbr: bool = False) -> list[str]:
    """Every problem of one case that needs no file access, each as one line ``"{id}: {field}: ..."``.

    Checks the input form and its fields, ``centroid_space``, 3 finite numbers per centroid, distinct right and
    left centroids, and the SBRs: present ones must be plausible, and with ``require_sbr`` both must be present
    (a ``mat`` case may instead carry them in its ``true_sbr``, checked when the file is read).
    """
    case_id = case.get("id", "<no id>")
    problems = []
    try:
        form = case_form(case)
    except ValueError as err:
        return [str(err)]
    for key in FORMS[form]:
        if not isinstance(case.get(key), str) or not case[key]:
            problems.append(f"{case_id}: {key}: must be a path, got {case.get(key)!r}")
    if form == "volume":
        space = case.get("centroid_space")
        if space not in CENTROID_SPACES:
            got = "missing" if space is None else f"got {space!r}"
            problems.append(f"{case_id}: centroid_space: must be 'voxel' or 'world', {got}")
        centroids = {}
        for key in CENTROID_KEYS:
            problem = "missing" if case.get(key) is None else _centroid_problem(case[key])
            if problem:
                problems.append(f"{case_id}: {key}: {problem}")
            else:
                centroids[key] = [float(v) for v in case[key]]
        if len(centroids) == 2 and centroids["centroid_right"] == centroids["centroid_left"]:
            problems.append(
                f"{case_id}: centroid_left: identical to centroid_right {centroids['centroid_left']}; "
                "give the two nigrosome-1 centroids"
            )
    for key in SBR_KEYS:
        if case.get(key) is None:
            if require_sbr and form != "mat":
                problems.append(f"{case_id}: {key}: {sbr_problem(None)}")
        elif problem := sbr_problem(case[key]):
            problems.append(f"{case_id}: {key}: {problem}")
    return problems


def case_path(base: str | os.PathLike, value: str, case_id: str = "<no id>", field: str = "image") -> Path:
    """A datalist path made absolute: relative paths are taken from ``base`` (``dataset_dir``) and may not climb
    out of it (``../`` past ``base`` is refused, one line); absolute paths are kept (cohorts often live elsewhere).

    The one place the rule is enforced; symbolic links inside ``base`` are followed when the file is read.
    """
    path = Path(value)
    if path.is_absolute():
        return path
    joined = Path(base) / path
    if not Path(os.path.abspath(joined)).is_relative_to(os.path.abspath(base)):
        raise ValueError(
            f"{case_id}: {field}: relative path {value!r} leaves dataset_dir {base}; give files outside it as "
            "absolute paths"
        )
    return joined


def load_cases(
    datalist: str | os.PathLike,
    section: str,
    dataset_dir: str | os.PathLike | None = None,
    validate: bool = False,
    require_sbr: bool | None = None,
) -> list[dict[str, Any]]:
    """Cases of one ``section`` (``training``, ``validation``, ``test``) with paths made absolute.

    Relative paths are resolved against ``dataset_dir`` (default: the datalist's folder). Always raises a
    one-line ``ValueError`` for malformed JSON, a missing section, a case without ``id`` and an id that occurs
    twice (in this section or in two sections: the same patient in training and test is a leak).

    With ``validate=True`` every case is also checked (:func:`validate_case`, and that its files exist) and all
    problems are raised at once, joined by ``"; "``; ``require_sbr`` defaults to ``section in
    LABELLED_SECTIONS``. Without it, per-case problems surface case by case in
    :class:`bundle.data.LoadNigralPatchesd`, so that inference can record them and go on.
    """
    path = Path(datalist)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist {path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"datalist {path}: malformed JSON (not UTF-8 text)") from None
    if not isinstance(content, dict) or section not in content:
        sections = sorted(content) if isinstance(content, dict) else []
        raise ValueError(f"datalist {path}: no section {section!r} (has {sections})")
    if not isinstance(content[section], list):
        raise ValueError(f"datalist {path}: section {section!r} must be a list of cases")
    other_ids = {
        str(raw["id"]): name
        for name, cases in content.items()
        if name != section and isinstance(cases, list)
        for raw in cases
        if isinstance(raw, dict) and raw.get("id")
    }
    base = Path(dataset_dir) if dataset_dir is not None else path.parent
    cases, seen = [], set()
    if not content[section]:
        raise ValueError(f"datalist {path}: section {section!r} is empty; there is nothing to run on")
    for i, raw in enumerate(content[section]):
        if not isinstance(raw, dict) or not raw.get("id"):
            raise ValueError(f"datalist {path}: {section}[{i}] has no 'id'")
        case_id = str(raw["id"])
        if any(unicodedata.category(ch).startswith("C") for ch in case_id):
            raise ValueError(f"datalist {path}: {section}[{i}] id {case_id!r} contains control characters")
        if case_id in seen or case_id in other_ids:
            where = f"{section!r}" if case_id in seen else f"{other_ids[case_id]!r} and {section!r}"
            raise ValueError(f"{case_id}: id: duplicate id {case_id!r} in {where} (datalist {path})")
        seen.add(case_id)
        case = dict(raw, id=case_id)
        for key in PATH_KEYS:
            if isinstance(case.get(key), str):
                case[key] = str(case_path(base, case[key], case_id, key))
        cases.append(case)
    if validate:
        required = section in LABELLED_SECTIONS if require_sbr is None else require_sbr
        problems = []
        for case in cases:
            found = validate_case(case, require_sbr=required)
            if not found:
                found = [
                    f"{case['id']}: {key}: file not found: {case[key]}"
                    for key in PATH_KEYS
                    if isinstance(case.get(key), str) and not Path(case[key]).exists()
                ]
            problems += found
        if problems:
            for problem in problems:
                logger.error("datalist %s: %s", path, problem)
            raise ValueError("; ".join(problems))
    return cases
