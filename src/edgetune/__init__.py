"""edgetune: fine-tune models and export ONNX bundles verified against PyTorch.

Here: ``tasks`` (task kinds and methods), ``errors``, ``progress``, the torch-free device ``runtime``
and the ``cli``. Installed beside them: ``edgetune.trainers`` (data, models, methods, recipes),
``edgetune.export`` (ONNX export, the parity gate, bundles) and ``edgetune.server`` (the gRPC service).
See docs/architecture.md.
"""

__version__ = "0.1.0"
