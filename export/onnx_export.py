"""PyTorch -> ONNX through ``torch.onnx.export(dynamo=True)``, with a full ``onnx.checker`` pass."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from .specs import ExportSpec


def export_onnx(model: nn.Module, sample: tuple[torch.Tensor, ...], spec: ExportSpec, path: str | Path,
                metadata: dict[str, object] | None = None, dim_max: dict[str, int] | None = None) -> Path:
    """Export an eval-mode model to a single self-contained ONNX file.

    Args:
        sample: example inputs in ``spec.inputs`` order (sizes >= 2 on dynamic axes, so the
            exporter cannot specialise them).
        metadata: written into ``metadata_props`` (values JSON-encoded unless already strings),
            so the model file alone describes its labels and preprocessing.
        dim_max: upper bounds per symbolic axis name (default 4096), e.g. a text model's
            maximum sequence length.
    """
    path = Path(path)
    model = model.eval()
    names = {name for axes in spec.inputs.values() for name in axes.values()}
    dims = {name: torch.export.Dim(name, min=1, max=(dim_max or {}).get(name, 4096)) for name in sorted(names)}
    shapes = tuple({axis: dims[name] for axis, name in axes.items()} for axes in spec.inputs.values())
    with torch.no_grad(), warnings.catch_warnings():
        # Inputs that share an axis (input_ids and attention_mask: "sequence") share one Dim by design.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(
            model, tuple(sample), dynamo=True, input_names=spec.input_names, output_names=list(spec.outputs),
            dynamic_shapes=shapes, opset_version=spec.opset, external_data=False, optimize=True, verbose=False,
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


def metadata_problems(path: str | Path, manifest: dict[str, object]) -> list[str]:
    """Where the model file's ``metadata_props`` (``edgetune.<key>``) disagree with the manifest's
    ``key``: a device may read either, so both must say the same."""
    props = read_metadata(path)
    problems = []
    for key, value in manifest.items():
        written = props.get(f"edgetune.{key}")
        if written is None or json.loads(written) != json.loads(json.dumps(value)):
            problems.append(f"model.onnx metadata edgetune.{key} differs from the manifest's {key}")
    return problems
