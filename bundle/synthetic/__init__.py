"""Synthetic cohorts for demonstration and tests (never real patients): the SMWI phantom and cohort of the regressor
(``smwi_phantom``, ``smwi_cohort``) and the DaT-SPECT / DAT-PET phantom and cohort of the companion bundles
(``dat_phantom``, ``dat_cohort``). Each module documents its image and label model and its sources of variation."""
