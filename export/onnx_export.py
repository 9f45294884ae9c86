"""PyTorch -> ONNX through ``torch.onnx.export(dynamo=True)``, with a full ``onnx.checker`` pass."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from .specs import ExportSpec


def export_onnx(model: nn.Module, sample: torch.Tensor, spec: ExportSpec, path: str | Path,
                metadata: dict[str, object] | None = None) -> Path:
    """Export an eval-mode model to a single self-contained ONNX file.

    Args:
        sample: an example input (its batch size does not matter; the batch axis is dynamic).
        metadata: written into ``metadata_props`` (values JSON-encoded unless already strings),
            so the model file alone describes its labels and preprocessing.
    """
    path = Path(path)
    model = model.eval()
    dims = {axis: torch.export.Dim(name, min=1, max=4096) for axis, name in spec.dynamic_axes.items()}
    with torch.no_grad():
        program = torch.onnx.export(
            model, (sample,), dynamo=True, input_names=[spec.input_name], output_names=[spec.output_name],
            dynamic_shapes=(dims,), opset_version=spec.opset, external_data=False, optimize=True, verbose=False,
        )
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as strings."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
