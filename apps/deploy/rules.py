"""The series selection rules of the Deploy app (MONAI Deploy's ``DICOMSeriesSelectorOperator`` format), here
without the SDK so that a study router can apply the same rules to a PACS's series."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["SELECTION_RULES", "series_matches"]

SELECTION_RULES = {
    "selections": [
        {
            "name": "SMWI",
            "conditions": {"Modality": "(?i)MR", "SeriesDescription": "(?i).*(smwi|swi|susceptibility).*"},
        }
    ]
}
"""Default series selection: an MR series whose description names SMWI / SWI (regular expressions, case-blind)."""


def series_matches(tags: Mapping[str, str], rules: Mapping = SELECTION_RULES) -> str | None:
    """The name of the first selection whose conditions (regular expressions, matched as the SDK's selector does,
    from the start of the value) all hold for the series' DICOM ``tags``; None when none does."""
    for selection in rules["selections"]:
        if all(re.match(pattern, str(tags.get(key, ""))) for key, pattern in selection["conditions"].items()):
            return selection["name"]
    return None
