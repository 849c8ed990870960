"""Symmetric 3D VGG regressor of striatal DaT-SPECT SBR from nigral SMWI MRI, as a MONAI bundle.

Research use only. See README.md and docs/README.md (model card).
"""

__version__ = "0.13.0"
