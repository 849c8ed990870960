"""Data: datalist reading and the embedded synthetic SMWI cohort."""

from bundle.data.datalist import DEMO_SUBDIR, load_cases, resolve_datalist

__all__ = ["DEMO_SUBDIR", "load_cases", "resolve_datalist"]
