"""Companion DaT systems, used by the bundles under ``bundles/``: the template space, the DaT-SPECT classifier of
Nazari et al. 2021 and DAT-Net (networks, preprocessing, binding ratios, classification metrics, LRP and
full-gradient explain workflows). Their synthetic cohort lives in ``bundle.synthetic``."""
