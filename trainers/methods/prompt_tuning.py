"""``prompt_tuning`` (text): trainable virtual tokens prepended to every input.

It cannot be merged into weights: a classifier's plain form is ``PromptPrefixed`` (base model +
prompt embeddings); a decoder's bundle carries the virtual tokens' keys and values instead.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from peft import PeftModel, PromptTuningConfig, get_peft_model


def apply(model: nn.Module, cfg, targets) -> nn.Module:
    config = PromptTuningConfig(task_type=targets.peft_task, num_virtual_tokens=cfg.prompt.virtual_tokens,
                                modules_to_save=list(targets.head) or None)
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


def base_with_saved_modules(model: PeftModel) -> nn.Module:
    """The base model of a prompt-learning PeftModel with its trained ``modules_to_save`` swapped in."""
    from peft.utils import ModulesToSaveWrapper

    base = model.base_model
    for name, module in list(base.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            parent = base.get_submodule(parent_name) if parent_name else base
            setattr(parent, child, module.modules_to_save["default"])
    return base
