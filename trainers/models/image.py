"""The explicit registry of image architectures edgetune can fine-tune and export.

Adding an architecture is one entry here: tests are parametrized over ``ARCHITECTURES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
import torch.nn as nn

from edgetune.errors import InvalidArgument

_VIT_LORA = r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
_RESNET_LORA = r".*layer\d\.\d+\.conv\d"
# Pointwise (1x1, groups=1) convolutions of the inverted-residual blocks; depthwise convs are skipped.
_MBCONV_LORA = r".*blocks\.\d+\.\d+\.conv_(pw|pwl)"


@dataclass(frozen=True)
class ArchSpec:
    """One fine-tunable image architecture.

    Attributes:
        timm_name: name passed to ``timm.create_model``.
        family: "cnn" or "vit"; ViTs are built for the training image size.
        lora_targets: regex over module names that LoRA adapts (peft ``target_modules``).
        patch_size: ViT patch size; image sizes must be a multiple of it.
        create_kwargs: extra ``timm.create_model`` keyword arguments, always applied.
    """

    timm_name: str
    family: str
    lora_targets: str
    patch_size: int = 1
    create_kwargs: dict = field(default_factory=dict)


ARCHITECTURES: dict[str, ArchSpec] = {
    "resnet18": ArchSpec("resnet18", "cnn", _RESNET_LORA),
    "resnet34": ArchSpec("resnet34", "cnn", _RESNET_LORA),
    "resnet50": ArchSpec("resnet50", "cnn", _RESNET_LORA),
    "vit_tiny_patch16_224": ArchSpec("vit_tiny_patch16_224", "vit", _VIT_LORA, patch_size=16),
    "vit_small_patch16_224": ArchSpec("vit_small_patch16_224", "vit", _VIT_LORA, patch_size=16),
    "vit_base_patch16_224": ArchSpec("vit_base_patch16_224", "vit", _VIT_LORA, patch_size=16),
    "efficientnet_lite0": ArchSpec("efficientnet_lite0", "cnn", _MBCONV_LORA),
    "mobilenetv3_large_100": ArchSpec("mobilenetv3_large_100", "cnn", _MBCONV_LORA),
}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InvalidArgument(
            "model.arch", f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def check_image_size(arch: str, image_size: int) -> None:
    spec = get_arch(arch)
    if image_size < 16 or image_size % spec.patch_size:
        raise InvalidArgument(
            "data.image_size",
            f"{image_size} does not fit {arch} (at least 16 and a multiple of {spec.patch_size})",
        )


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
