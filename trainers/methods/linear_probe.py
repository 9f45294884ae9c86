"""``linear_probe``: the backbone is frozen (BatchNorm statistics too, see ``set_train_mode``); only the head trains."""

from __future__ import annotations

import torch.nn as nn


def apply(model: nn.Module, cfg, targets) -> nn.Module:
    model.requires_grad_(False)
    for name, module in model.named_modules():
        if targets.is_head(name):
            module.requires_grad_(True)
    return model
