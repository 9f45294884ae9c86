"""Declarative export specs per task: names, dynamic axes, opset and parity tolerance.

Adding a task family (e.g. text classification) is one entry in ``EXPORT_SPECS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportSpec:
    """How one task family is exported and verified.

    Attributes:
        input_name / output_name: ONNX graph names (stable API for device code).
        dynamic_axes: input axis index -> symbolic name.
        opset: ONNX opset the exporter targets.
        atol: max abs difference allowed between PyTorch and ONNX Runtime outputs (fp32).
        large_batch: the "larger batch" parity is checked at, besides batch 1.
        parity_samples: held-out validation images kept in a run for the parity gate.
    """

    task: str
    input_name: str
    output_name: str
    dynamic_axes: dict[int, str]
    opset: int = 20
    atol: float = 1e-4
    large_batch: int = 16
    parity_samples: int = 64


EXPORT_SPECS: dict[str, ExportSpec] = {
    "image_classification": ExportSpec(
        task="image_classification", input_name="pixel_values", output_name="logits",
        dynamic_axes={0: "batch"},
    ),
}
