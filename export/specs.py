"""Declarative export specs per task: names, dynamic axes, opset and parity tolerances.

Adding a task family is one entry in ``EXPORT_SPECS``. The fp32 model is held to a parity
``Tolerance`` against PyTorch; its FP16 and INT8 variants to a ``VariantGate`` on held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgetune.errors import InvalidArgument
from edgetune.tasks import IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION, TEXT_GENERATION


@dataclass(frozen=True)
class Tolerance:
    """How far an exported output may be from its reference: per output value,
    ``|got - ref| <= atol + rtol * |ref|`` (the ``np.allclose`` rule)."""

    atol: float
    rtol: float

    def allowed(self, ref: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(ref.astype(np.float64))

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol}


FP32, FP16, INT8 = "fp32", "fp16", "int8"
PRECISIONS = (FP32, FP16, INT8)  # fp32 is always exported; the others are variants beside it
THREADS_ENV = "EDGETUNE_EXPORT_THREADS"  # threads per export process (a batch sets its share of the cores)


def parse_precisions(values) -> list[str]:
    """``"fp32,int8"`` or ``["fp32", "int8"]`` -> the precisions in canonical order; fp32 always."""
    if isinstance(values, str):
        values = values.split(",")
    asked = [v.strip().lower() for v in values or [] if v.strip()]
    unknown = [v for v in asked if v not in PRECISIONS]
    if unknown:
        raise InvalidArgument("precision", f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
    return [p for p in PRECISIONS if p in asked or p == FP32]


@dataclass(frozen=True)
class VariantGate:
    """What a reduced-precision variant must keep on the run's held-out data, against the fp32
    ONNX model: accuracy and macro-F1 within ``max_drop_pt`` points, top-1 agreement with fp32 of
    at least ``min_agreement`` (when set), and never a NaN or Inf."""

    max_drop_pt: float
    min_agreement: float | None = None

    def to_dict(self) -> dict:
        return {"max_drop_pt": self.max_drop_pt, "min_top1_agreement": self.min_agreement, "nonfinite": 0}


# Published INT8 drops: ResNet-50 0.2-0.5 pt, EfficientNet-Lite0 0.3 pt, DeiT-small 0.2 pt,
# BERT-family 0.35-0.8 pt; fp16 changes outputs by ~1e-3 relative and should flip nothing.
VARIANT_GATES = {INT8: VariantGate(1.0, 0.98), FP16: VariantGate(0.1)}

# fp32 against fp32, measured by bench/parity_margins.py on a 2-core CPU: 60 exports of every
# registry architecture (2 seeds, trained and untrained heads) stay below margin 0.005, the README
# demo's path over 10 seeds below 0.055, while the tampered exports there (a wrong normalization,
# noisy head weights, a broken LoRA merge) fail at margins of 1.6 to 985. Errors scale with the
# logits (the rtol part dominates); atol covers values near zero.
FP32_IMAGE = Tolerance(atol=5e-4, rtol=1e-3)
FP32_TEXT = Tolerance(atol=5e-4, rtol=1e-3)


@dataclass(frozen=True)
class ExportSpec:
    """How one task family is exported and verified.

    Attributes:
        inputs: ONNX input name -> {axis index: symbolic name} for its dynamic axes. Names are a
            stable API for device code; axes with the same symbolic name share one dimension.
        outputs: ONNX output names.
        opset: ONNX opset the exporter targets.
        tolerances: precision -> the parity tolerance against the fp32 PyTorch reference (fp32
            only: reduced-precision variants are gated on held-out accuracy, ``VARIANT_GATES``).
        large_batch: the "larger batch" parity is checked at, besides batch 1.
    """

    task: str
    inputs: dict[str, dict[int, str]]
    outputs: tuple[str, ...]
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    opset: int = 20
    large_batch: int = 16

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def tolerance(self, precision: str = FP32) -> Tolerance:
        if precision not in self.tolerances:
            raise KeyError(f"{self.task} declares no parity tolerance for {precision}")
        return self.tolerances[precision]


_TOKENS = {0: "batch", 1: "sequence"}

EXPORT_SPECS: dict[str, ExportSpec] = {
    IMAGE_CLASSIFICATION: ExportSpec(
        task=IMAGE_CLASSIFICATION, inputs={"pixel_values": {0: "batch"}}, outputs=("logits",),
        tolerances={FP32: FP32_IMAGE}),
    TEXT_CLASSIFICATION: ExportSpec(
        task=TEXT_CLASSIFICATION, inputs={"input_ids": _TOKENS, "attention_mask": _TOKENS},
        outputs=("logits",), tolerances={FP32: FP32_TEXT}),
    # Decoders: the KV-cache inputs and outputs per layer are described by ``decoder.DecoderIO``.
    TEXT_GENERATION: ExportSpec(
        task=TEXT_GENERATION, inputs={"input_ids": _TOKENS, "attention_mask": {0: "batch", 1: "total_sequence"},
                                        "position_ids": _TOKENS}, outputs=("logits",),
        tolerances={FP32: FP32_TEXT}),
}
