"""Export: ONNX through torch.onnx (dynamo), the parity gate, bundles and the ONNX Runtime predictor."""
