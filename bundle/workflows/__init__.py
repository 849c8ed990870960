"""What the MONAI workflows of the configs are built from, besides the method: device and precision setup, the
preflight checks and the override check, the checkpoint record and exact resume, CPU heap reuse, and the inference
dataset and MC inferer."""
