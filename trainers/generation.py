"""Instruction-tuning pieces: prompt formatting, response-only labels, greedy decoding, metrics.

A prompt is wrapped by the tokenizer's chat template when it has one, otherwise by
``PLAIN_TEMPLATE``; the response follows and ends with the eos token. Only response tokens carry
labels (prompt and padding are ``IGNORE``), so the loss is on what the model should write.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from edgetune.runtime.prompting import encode_prompt

IGNORE = -100


def prompt_ids(tokenizer, fmt: dict, prompt: str) -> list[int]:
    """Token ids of a wrapped prompt with the run's HF tokenizer (same ids as ``encode_prompt``)."""
    return encode_prompt(tokenizer.backend_tokenizer, fmt, prompt)


def encode_pairs(tokenizer, fmt: dict, prompts: list[str], responses: list[str], max_length: int
                 ) -> tuple[list[tuple[list[int], list[int]]], list[int], int]:
    """(input_ids, labels) per row, truncated to ``max_length``; untruncated lengths; rows dropped
    because truncation left no response token."""
    out, lengths, dropped = [], [], 0
    for p, r in zip(prompts, responses):
        pid = prompt_ids(tokenizer, fmt, p)
        rid = tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids, labels = pid + rid, [IGNORE] * len(pid) + rid
        lengths.append(len(ids))
        ids, labels = ids[:max_length], labels[:max_length]
        if all(x == IGNORE for x in labels):
            dropped += 1
            continue
        out.append((ids, labels))
    return out, lengths, dropped


def pad_pairs(pad_id: int):
    """Right-pad (ids, labels) rows: input_ids, attention_mask, labels (IGNORE on padding)."""

    def collate(batch):
        width = max(len(ids) for ids, _ in batch)
        ids_t = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        for r, (ids, lab) in enumerate(batch):
            ids_t[r, :len(ids)] = torch.tensor(ids)
            mask[r, :len(ids)] = 1
            labels[r, :len(lab)] = torch.tensor(lab)
        return ids_t, mask, labels

    return collate


def response_loss(model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean cross-entropy over response tokens, their next-token accuracy count, and their count.

    The last ``seq`` logits are the real positions (a prompt-tuned model prepends virtual tokens).
    """
    ids, mask, labels = (t.to(device, non_blocking=True) for t in batch)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:].float()
    target = labels[:, 1:]
    pred = logits[:, :-1]
    n = int((target != IGNORE).sum())
    loss = nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
    correct = ((pred.argmax(-1) == target) & (target != IGNORE)).sum()
    return loss, correct, n


@torch.inference_mode()
def evaluate_loss(model: nn.Module, loader, setup) -> dict[str, float]:
    """Token-weighted validation loss, perplexity and next-token accuracy on response tokens."""
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for batch in loader:
        with setup.autocast():
            loss, right, n = response_loss(model, batch, setup.device)
        total += float(loss) * n
        correct += int(right)
        count += n
    model.train(was_training)
    val_loss = total / max(count, 1)
    return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0)),
            "val_accuracy": correct / max(count, 1)}


def greedy_with_logits(model: nn.Module, prompt: list[int], max_new_tokens: int, eos_token_id: int | None
                       ) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding in PyTorch (batch 1), and each step's logits over the vocabulary.

    A plain model decodes with its own cache. A peft prompt-learning model re-runs its forward
    (which prepends the virtual tokens) on the whole sequence each step: peft 0.21's ``generate``
    looks for ``past_key_values`` where transformers 5 passes ``cache`` and so re-injects the
    virtual tokens at every decode step. ``generate()`` is avoided for plain models too because it
    replaces ``eos_token_id=None`` by the config's eos token.
    """
    full_sequence = getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)
    device = next(model.parameters()).device
    tokens, logits, cache = [], [], None
    sequence = torch.tensor([prompt], dtype=torch.long, device=device)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            if cache is None or full_sequence:
                out = model(input_ids=sequence, attention_mask=torch.ones_like(sequence), use_cache=not full_sequence)
            else:
                out = model(input_ids=sequence[:, -1:], attention_mask=torch.ones_like(sequence), cache=cache,
                            use_cache=True)
            cache = out.cache
            row = out.logits[0, -1].float().cpu()
            tokens.append(int(row.argmax()))
            logits.append(row.numpy().copy())
            if tokens[-1] == eos_token_id:
                break
            sequence = torch.cat([sequence, torch.tensor([[tokens[-1]]], device=device)], dim=1)
    return tokens, logits


def torch_greedy(model: nn.Module, prompt: list[int], max_new_tokens: int, eos_token_id: int | None = None
                 ) -> list[int]:
    """Greedy new tokens in PyTorch (a ``PreTrainedModel`` or a peft ``PeftModel``)."""
    return greedy_with_logits(model.eval(), prompt, max_new_tokens, eos_token_id)[0]


def generation_metrics(model: nn.Module, tokenizer, fmt: dict, prompts: list[str], references: list[str],
                       max_new_tokens: int) -> dict:
    """Exact match and chrF (sacrebleu) of greedy outputs against the references."""
    import sacrebleu

    outputs = []
    for p in prompts:
        new = torch_greedy(model, prompt_ids(tokenizer, fmt, p), max_new_tokens, tokenizer.eos_token_id)
        if new and new[-1] == tokenizer.eos_token_id:
            new = new[:-1]
        # Decoded as devices decode (the bare tokenizer), so the scores describe what is served.
        outputs.append(tokenizer.backend_tokenizer.decode(new, skip_special_tokens=True))
    exact = float(np.mean([o.strip() == r.strip() for o, r in zip(outputs, references)])) if prompts else 0.0
    chrf = sacrebleu.corpus_chrf(outputs, [references]).score if prompts else 0.0
    return {"exact_match": exact, "chrf": chrf, "samples": len(prompts), "distinct_outputs": len(set(outputs)),
            "examples": [{"prompt": p, "reference": r, "output": o}
                         for p, r, o in list(zip(prompts, references, outputs))[:5]]}
