"""Ignite handlers and metrics of the workflows, in the manner of ``monai.handlers``: the loss-term handler, per-side
SBR metrics, the prediction and calibration writers, and MLflow tracking."""
