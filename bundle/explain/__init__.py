"""Where the regressor looks: HiResCAM for regression (symmetric-regressor paper §5.3, Fig. 6), layer-wise relevance
propagation with the DaT-SPECT LRP paper's rule layout, and full-gradient saliency (DAT-Net paper)."""
