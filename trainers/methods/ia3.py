"""``ia3`` (text): peft IA3 scaling vectors on the family's attention and feed-forward modules."""

from __future__ import annotations

import torch.nn as nn
from peft import IA3Config, get_peft_model


def apply(model: nn.Module, cfg, targets) -> nn.Module:
    config = IA3Config(task_type=targets.peft_task, target_modules=list(targets.ia3),
                       feedforward_modules=list(targets.ia3_feedforward), modules_to_save=list(targets.head) or None,
                       fan_in_fan_out=targets.fan_in_fan_out)
    return get_peft_model(model, config)
