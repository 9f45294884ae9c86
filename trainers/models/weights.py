"""Which base weights a run starts from: ``resolve_weights(arch, weights)`` for every task.

``weights`` is "catalog" (the architecture's first catalog entry), "random", a catalog entry
name, or a local path: a weights file or folder for timm models, an HF directory (config.json,
model.safetensors, tokenizer.json; ``trust_remote_code`` is never set) for text models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.errors import WeightsError
from edgetune.trainers.models.catalog import find_entry
from edgetune.trainers.models.registry import TEXT_ARCHITECTURES


@dataclass(frozen=True)
class WeightsSource:
    """A resolved weights choice, recorded in every report.

    Attributes:
        kind: "catalog", "file" (timm weights), "dir" (an HF directory) or "random".
        key_map, create_kwargs: how a timm state dict maps onto the model (see ``CatalogEntry``).
    """

    kind: str
    name: str  # entry name, path or "random"
    path: str | None = None
    key_map: str = "names"
    create_kwargs: dict = field(default_factory=dict)
    text: bool = False

    def describe(self) -> str:
        if self.kind == "random":
            return "random init (tiny config, tokenizer trained on the data)" if self.text \
                else "random init (no pretrained weights)"
        return f"{self.kind} {self.name} ({self.path})"


def resolve_weights(arch: str, weights: str) -> WeightsSource:
    """Resolve ``model.weights`` for ``arch`` (an image or a text architecture) to local files."""
    text = arch in TEXT_ARCHITECTURES
    if weights == "random":
        return WeightsSource("random", "random", text=text)
    found = find_entry(arch, weights)
    if found is None:
        if text:
            return WeightsSource("dir", weights, str(_check_hf_dir(Path(weights), arch)), text=True)
        return WeightsSource("file", weights, str(_weights_file(Path(weights))))
    entry, p = found
    if text:
        return WeightsSource("catalog", entry.name, str(_check_hf_dir(p, arch)), text=True)
    return WeightsSource("catalog", entry.name, str(p), entry.key_map, dict(entry.create_kwargs))


def _weights_file(p: Path) -> Path:
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.pth", "model.pth"):
            if (p / name).is_file():
                return p / name
        raise WeightsError(str(p), "directory holds no model.safetensors or model.pth")
    if not p.is_file():
        raise WeightsError(str(p), "weights file not found")
    if p.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise WeightsError(str(p), "weights must be .safetensors or a .pth state dict")
    return p


def _check_hf_dir(p: Path, arch: str) -> Path:
    if not p.is_dir() or not (p / "config.json").is_file():
        raise WeightsError(str(p), "text weights must be a local HF directory with config.json")
    if not (p / "model.safetensors").is_file():
        raise WeightsError(str(p), "directory holds no model.safetensors (only safetensors are loaded)")
    if not (p / "tokenizer.json").is_file():
        raise WeightsError(str(p), "directory holds no tokenizer.json (a fast tokenizer is required)")
    model_type = json.loads((p / "config.json").read_text()).get("model_type")
    if model_type != TEXT_ARCHITECTURES[arch].model_type:
        raise WeightsError(str(p), f"config.json is model_type {model_type!r}, not {arch!r}")
    return p
