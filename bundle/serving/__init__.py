"""Serving one patient where users run the model: the bundle's inference workflow on one case, and its outputs as
a DICOM Structured Report and a PDF/PNG report (used by the MONAI Deploy and MONAI Label apps in ``apps/``)."""
