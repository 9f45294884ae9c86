"""Declarative export specs per task: names, dynamic axes, opset and parity tolerance.

Adding a task family is one entry in ``EXPORT_SPECS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportSpec:
    """How one task family is exported and verified.

    Attributes:
        inputs: ONNX input name -> {axis index: symbolic name} for its dynamic axes. Names are a
            stable API for device code; axes with the same symbolic name share one dimension.
        outputs: ONNX output names.
        opset: ONNX opset the exporter targets.
        atol: max abs difference allowed between PyTorch and ONNX Runtime outputs (fp32).
        large_batch: the "larger batch" parity is checked at, besides batch 1.
    """

    task: str
    inputs: dict[str, dict[int, str]]
    outputs: tuple[str, ...]
    opset: int = 20
    atol: float = 1e-4
    large_batch: int = 16

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)


_TOKENS = {0: "batch", 1: "sequence"}

EXPORT_SPECS: dict[str, ExportSpec] = {
    "image_classification": ExportSpec(
        task="image_classification", inputs={"pixel_values": {0: "batch"}}, outputs=("logits",)),
    "text_classification": ExportSpec(
        task="text_classification", inputs={"input_ids": _TOKENS, "attention_mask": _TOKENS},
        outputs=("logits",)),
    # Decoders: the KV-cache inputs and outputs per layer are described by ``decoder.DecoderIO``.
    "text_generation": ExportSpec(
        task="text_generation", inputs={"input_ids": _TOKENS, "attention_mask": {0: "batch", 1: "total_sequence"},
                                        "position_ids": _TOKENS}, outputs=("logits",)),
}
