"""Fine-tuning methods: which parameters train, and how a trained model becomes a plain one.

- ``full``: every parameter trains.
- ``linear_probe``: the backbone is frozen (BatchNorm statistics too); only the head trains.
- ``lora``: peft LoRA adapters on the architecture's registry targets; the head trains fully.
- ``ia3`` (text): peft IA3 scaling vectors on the family's attention and feed-forward modules.
- ``prompt_tuning`` (text): trainable virtual tokens prepended to every input. It cannot be
  merged into weights: the plain form is ``PromptPrefixed`` (base model + prompt embeddings).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from peft import IA3Config, LoraConfig, PeftModel, PromptTuningConfig, TaskType, get_peft_model

from edgetune.trainers.models.image import get_arch, head_name
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.models.text import CLASSIFICATION, TEXT_ARCHITECTURES


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


def apply_text_method(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The text counterpart of ``apply_method``: per-family targets; the classifier head trains."""
    spec = TEXT_ARCHITECTURES[cfg.model.arch]
    classify = cfg.task == CLASSIFICATION
    task_type = TaskType.SEQ_CLS if classify else TaskType.CAUSAL_LM
    heads = list(spec.head) if classify else None
    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    if cfg.method == "linear_probe":
        model.requires_grad_(False)
        for name, module in model.named_modules():
            if any(name == h or name.endswith("." + h) for h in spec.head):
                module.requires_grad_(True)
        return model
    if cfg.method == "lora":
        config = LoraConfig(task_type=task_type, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                            lora_dropout=cfg.lora.dropout, target_modules=list(spec.lora_targets),
                            modules_to_save=heads, fan_in_fan_out=spec.model_type == "gpt2")
    elif cfg.method == "ia3":
        config = IA3Config(task_type=task_type, target_modules=list(spec.ia3_targets),
                           feedforward_modules=list(spec.ia3_feedforward), modules_to_save=heads,
                           fan_in_fan_out=spec.model_type == "gpt2")
    else:
        config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prompt.virtual_tokens,
                                    modules_to_save=heads)
    return get_peft_model(model, config)


class PromptPrefixed(nn.Module):
    """A prompt-tuned classifier as a plain module: virtual token embeddings, then the input.

    ``forward(input_ids, attention_mask) -> logits``: the same computation peft runs for prompt
    tuning (prompts prepended to the word embeddings, attention mask extended with ones).
    """

    def __init__(self, model: nn.Module, prompt: torch.Tensor):
        super().__init__()
        self.model = model
        self.prompt = nn.Parameter(prompt.detach().clone(), requires_grad=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.model.get_input_embeddings()(input_ids)
        batch = input_ids.shape[0]
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        ones = torch.ones(batch, self.prompt.shape[0], dtype=attention_mask.dtype, device=attention_mask.device)
        return self.model(inputs_embeds=torch.cat([prompt, embeds], 1),
                          attention_mask=torch.cat([ones, attention_mask], 1)).logits


def prompt_embeddings(model: PeftModel) -> torch.Tensor:
    """The trained virtual token embeddings [num_virtual_tokens, hidden] of a prompt-tuned model."""
    return model.get_prompt_embedding_to_save(adapter_name="default").detach().float().cpu()


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
    """A plain model with adapters merged, leaving the training model untouched.

    Prompt tuning has nothing to merge: its plain model is the base (with its trained head);
    the prompt embeddings travel separately (``prompt_embeddings``).
    """
    if isinstance(model, PeftModel):
        if model.peft_config["default"].is_prompt_learning:
            return _with_saved_modules(copy.deepcopy(model))
        return copy.deepcopy(model).merge_and_unload()
    return model


def _with_saved_modules(model: PeftModel) -> nn.Module:
    """The base model of a prompt-learning PeftModel with its trained ``modules_to_save`` swapped in."""
    from peft.utils import ModulesToSaveWrapper

    base = model.base_model
    for name, module in list(base.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            parent = base.get_submodule(parent_name) if parent_name else base
            setattr(parent, child, module.modules_to_save["default"])
    return base
