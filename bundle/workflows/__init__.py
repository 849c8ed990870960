"""What the MONAI workflows of the configs are built from, besides the method: device and precision setup (with the
OpenVINO features backend), the preflight checks and the override check, the checkpoint record, its atomic savers and
exact resume, CPU heap reuse, and the inference dataset and MC inferer."""
