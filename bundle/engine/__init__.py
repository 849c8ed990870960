"""Engine glue for the MONAI workflows the configs build: device and precision setup, checkpoints and exact resume,
Ignite handlers and metrics, MC-dropout inference and its output writers, and the multi-run experiment runner.

The top layer: may import every other sub-package; nothing else imports it.
"""
