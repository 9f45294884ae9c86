"""``lora``: peft LoRA adapters on the registry's targets; the classifier head trains fully."""

from __future__ import annotations

import torch.nn as nn
from peft import LoraConfig, get_peft_model


def apply(model: nn.Module, cfg, targets) -> nn.Module:
    config = LoraConfig(task_type=targets.peft_task, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                        lora_dropout=cfg.lora.dropout,
                        target_modules=targets.lora if isinstance(targets.lora, str) else list(targets.lora),
                        modules_to_save=list(targets.head) or None, fan_in_fan_out=targets.fan_in_fan_out)
    return get_peft_model(model, config)
