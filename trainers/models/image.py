"""Image models: building timm architectures (``registry.ARCHITECTURES``) and loading local base weights.

Loading
verifies that every backbone tensor fits the architecture; the classifier head is always
re-initialised for the new label set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file

from edgetune.errors import WeightsError
from edgetune.integrity import sha256_file
from edgetune.trainers.models.registry import get_arch

if TYPE_CHECKING:
    from edgetune.trainers.models.weights import WeightsSource

def create_model(arch: str, num_classes: int, image_size: int, extra_kwargs: dict | None = None) -> nn.Module:
    """Build a randomly initialised timm model with a ``num_classes`` head. Never downloads."""
    spec = get_arch(arch)
    kwargs = {**spec.create_kwargs, **(extra_kwargs or {})}
    if spec.family == "vit":
        kwargs["img_size"] = image_size
    return timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes, **kwargs)


def head_name(model: nn.Module) -> str:
    """Name of the classifier module (``fc``, ``head`` or ``classifier``)."""
    return model.pretrained_cfg["classifier"]


def default_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = model.pretrained_cfg
    return tuple(cfg["mean"]), tuple(cfg["std"])


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
