"""Fine-tuning methods, one file each: which parameters train, and how a trained model becomes plain.

Every method module has ``apply(model, cfg, targets) -> model to train``. ``Targets`` says where a
method attaches in one model, read from the model registries (timm architectures, text families).
Adding a method: a name in ``edgetune.tasks``, a module here with ``apply``, an entry in ``METHODS``
(and a branch in ``plain_model`` if its result is not a plain model after merging).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch.nn as nn
from peft import PeftModel, TaskType

from edgetune.tasks import FULL, IA3, LINEAR_PROBE, LORA, PROMPT_TUNING, TEXT_CLASSIFICATION, get_task
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.methods import full, ia3, linear_probe, lora, prompt_tuning
from edgetune.trainers.models.image import head_name
from edgetune.trainers.models.registry import get_arch
from edgetune.trainers.models.registry import TEXT_ARCHITECTURES

METHODS = {FULL: full, LINEAR_PROBE: linear_probe, LORA: lora, IA3: ia3, PROMPT_TUNING: prompt_tuning}


@dataclass(frozen=True)
class Targets:
    """Where methods attach in one model.

    Attributes:
        head: classifier head modules (name suffixes, as peft's ``modules_to_save``); they train
            with every method. Empty for decoders.
        lora: LoRA target modules: a regex (timm) or name suffixes (transformers).
        ia3, ia3_feedforward: IA3 scaled modules, and which of them are feed-forward.
        task_type: peft's ``TaskType`` for transformers ("SEQ_CLS", "CAUSAL_LM"); None for timm.
        fan_in_fan_out: GPT-2's Conv1D layers store weights transposed.
    """

    head: tuple[str, ...]
    lora: str | tuple[str, ...]
    ia3: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()
    task_type: str | None = None
    fan_in_fan_out: bool = False

    @property
    def peft_task(self) -> TaskType | None:
        return TaskType[self.task_type] if self.task_type else None

    def is_head(self, module_name: str) -> bool:
        return any(module_name == h or module_name.endswith("." + h) for h in self.head)


def targets(model: nn.Module, cfg: TrainConfig) -> Targets:
    if get_task(cfg.task).modality == "image":
        return Targets((head_name(model),), get_arch(cfg.model.arch).lora_targets)
    spec = TEXT_ARCHITECTURES[cfg.model.arch]
    classify = cfg.task == TEXT_CLASSIFICATION
    return Targets(spec.head if classify else (), spec.lora_targets, spec.ia3_targets, spec.ia3_feedforward,
                   "SEQ_CLS" if classify else "CAUSAL_LM", spec.model_type == "gpt2")


def apply_method(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Return the model to train (possibly peft-wrapped) with ``requires_grad`` set per ``cfg.method``."""
    return METHODS[cfg.method].apply(model, cfg, targets(model, cfg))


def set_train_mode(model: nn.Module, method: str) -> None:
    """Train mode, but frozen backbones keep their BatchNorm statistics fixed."""
    model.train()
    if method != FULL:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def plain_model(model: nn.Module) -> nn.Module:
    """A plain model with adapters merged, leaving the training model untouched.

    Prompt tuning has nothing to merge: its plain model is the base (with its trained head);
    the prompt embeddings travel separately (``prompt_tuning.prompt_embeddings``).
    """
    if isinstance(model, PeftModel):
        if model.peft_config["default"].is_prompt_learning:
            return prompt_tuning.base_with_saved_modules(copy.deepcopy(model))
        return copy.deepcopy(model).merge_and_unload()
    return model
