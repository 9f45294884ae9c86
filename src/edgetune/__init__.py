"""edgetune: fine-tune models and export ONNX bundles verified against PyTorch.

Subpackages: ``edgetune.trainers`` (datasets, configs, training recipes),
``edgetune.export`` (ONNX export, parity gate, bundles, runtime) and
``edgetune.server`` (the gRPC service).
"""

__version__ = "0.1.0"
