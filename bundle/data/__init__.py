"""Data: datalist reading and validation, readers, the MONAI transforms that make the mirrored patch pair and its
target, and the embedded synthetic SMWI cohort (``bundle.synthetic.smwi_cohort``, imported on first use).

Imports ``bundle.constants`` and ``bundle.io`` only.
"""

from bundle.data.datalist import DEMO_SUBDIR, load_cases, resolve_datalist
from bundle.data.loading import LoadNigralPatchesd
from bundle.data.pairs import NigralPatchPaird
from bundle.data.patches import ExtractNigralPatchesd
from bundle.data.readers import error_message
from bundle.data.transforms import DivideByMeand, SBRTargetd, SBRUnitsd

__all__ = [
    "DEMO_SUBDIR",
    "load_cases",
    "resolve_datalist",
    "LoadNigralPatchesd",
    "NigralPatchPaird",
    "ExtractNigralPatchesd",
    "DivideByMeand",
    "SBRTargetd",
    "SBRUnitsd",
    "error_message",
]
