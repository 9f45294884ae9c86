"""Fine-tuning methods: which parameters train, and how a trained model becomes a plain one.

- ``full``: every parameter trains.
- ``linear_probe``: the backbone is frozen (BatchNorm statistics too); only the head trains.
- ``lora``: peft LoRA adapters on the architecture's registry targets; the head trains fully.
"""

from __future__ import annotations

import copy

import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model

from .architectures import get_arch, head_name
from .config import TrainConfig


def apply_method(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Return the model to train (possibly peft-wrapped) with ``requires_grad`` set per method."""
    head = head_name(model)
    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    if cfg.method == "linear_probe":
        model.requires_grad_(False)
        model.get_submodule(head).requires_grad_(True)
        return model
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=get_arch(cfg.model.arch).lora_targets, modules_to_save=[head])
    return get_peft_model(model, lora)


def set_train_mode(model: nn.Module, method: str) -> None:
    """Train mode, but frozen backbones keep their BatchNorm statistics fixed."""
    model.train()
    if method != "full":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def plain_model(model: nn.Module) -> nn.Module:
    """A plain timm model with adapters merged, leaving the training model untouched."""
    if isinstance(model, PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model
