"""MONAI Deploy application: a DICOM SMWI series in, both striatal SBRs with intervals out (JSON, PNG/PDF report,
DICOM Comprehensive SR). Research use only. Needs the ``deploy`` extra (see docs/integrations/deploy.md)."""
