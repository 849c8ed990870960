"""The trained network as files for other runtimes: TorchScript and ONNX, each recording its config and ``sbr_max``
(the OpenVINO backend of CPU inference is part of ``bundle.workflows``)."""
