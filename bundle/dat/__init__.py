"""Companion DaT systems: a synthetic DaT-SPECT / DAT-PET cohort in a template space, the DaT-SPECT classifier of
Nazari et al. 2021 and DAT-Net (full-gradient saliency, DL-BR), used by the bundles under ``bundles/``."""
