"""The network in other runtimes: TorchScript and ONNX files that record their config, and the OpenVINO features
backend of CPU inference."""
