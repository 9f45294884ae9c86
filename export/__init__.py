"""Export: ONNX through torch.onnx (dynamo), the parity gate and bundles; devices run them with ``edgetune.runtime``."""
