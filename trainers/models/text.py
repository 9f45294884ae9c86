"""Text models: the explicit registry of transformers families, building them, and their tokenizers.

A family is a transformers ``model_type``. Base weights are local HF-format directories only
(``config.json`` + ``model.safetensors`` + tokenizer files; ``trust_remote_code`` is never
set): the built-in ``all-minilm-l6-v2`` entry, an operator's ``$EDGETUNE_CATALOG`` entry, or a
directory path (``weights.resolve_weights``). ``weights: random`` builds the family's tiny config and trains a tokenizer on
the training texts with ``tokenizers``: for tests and smoke runs, never for a real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, PreTrainedTokenizerFast)

from edgetune.integrity import sha256_file
from edgetune.errors import InvalidArgument, WeightsError
from edgetune.tasks import TEXT_CLASSIFICATION
from edgetune.trainers.models.registry import TEXT_ARCHITECTURES

if TYPE_CHECKING:
    from edgetune.trainers.models.weights import WeightsSource




def train_tokenizer(arch: str, texts: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A small tokenizer trained on ``texts`` for a random-init model (tests and smoke runs)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    spec = TEXT_ARCHITECTURES[arch]
    if spec.tokenizer == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        # Built by hand: tokenizers' WordPieceTrainer does not give the same vocab twice, and a
        # random-init run must rebuild identically (tests compare resumed and uninterrupted runs).
        tok = Tokenizer(models.WordPiece(_wordpiece_vocab(texts, specials, vocab_size), unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
            ("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    encoder = TEXT_CLASSIFICATION in spec.tasks
    specials = ["<pad>", "<s>", "</s>", "<unk>"] + (["<mask>"] if encoder else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if encoder:  # RoBERTa wraps a text in <s> ... </s>
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
            ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def _wordpiece_vocab(texts: list[str], specials: list[str], size: int) -> dict[str, int]:
    """Specials, every character (alone and as ``##`` continuation), then the most frequent words."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    vocab = specials + chars + [f"##{c}" for c in chars]
    known = set(vocab)
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= size:
            break
        if w not in known:
            vocab.append(w)
            known.add(w)
    return {t: i for i, t in enumerate(vocab)}


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer from a local directory (never remote code, never the hub)."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False, use_fast=True)
    except Exception as e:  # noqa: BLE001 - any failure is a bad tokenizer directory
        raise WeightsError(str(path), f"cannot load the tokenizer: {str(e).splitlines()[0]}") from None
    if not tok.is_fast:
        raise WeightsError(str(path), "only fast tokenizers (tokenizer.json) are supported")
    return tok


def _tiny_config(arch: str, tokenizer) -> object:
    spec = TEXT_ARCHITECTURES[arch]
    ids = {"pad_token_id": tokenizer.pad_token_id}
    if tokenizer.bos_token_id is not None:
        ids.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return AutoConfig.for_model(spec.model_type, vocab_size=len(tokenizer), **spec.tiny, **ids)


def create_text_model(task: str, arch: str, source: WeightsSource, num_labels: int, seed: int,
                      train_texts: list[str], tokenizer: PreTrainedTokenizerFast | None = None
                      ) -> tuple[nn.Module, PreTrainedTokenizerFast, dict]:
    """Build the model to fine-tune and its tokenizer; returns (model, tokenizer, weights report).

    Args:
        tokenizer: a resumed run's saved tokenizer, used instead of training or loading one, so a
            resumed run keeps tokenizing exactly as it started (and as its bundle will).
    """
    auto = auto_class(task)
    kwargs = {"num_labels": num_labels} if task == TEXT_CLASSIFICATION else {}
    torch.manual_seed(seed)
    if source.kind == "random":
        tokenizer = tokenizer or train_tokenizer(arch, train_texts)
        config = _tiny_config(arch, tokenizer)
        for k, v in kwargs.items():
            setattr(config, k, v)
        model = auto.from_config(config)
        return model, tokenizer, {"source": source.describe(), "loaded_tensors": 0, "new_tensors": "all"}
    tokenizer = tokenizer or load_tokenizer(source.path)
    from transformers.utils import logging as hf_logging

    # Our report lists the new (head) tensors; transformers' own load table and bar are noise here.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = auto.from_pretrained(source.path, local_files_only=True, trust_remote_code=False,
                                           use_safetensors=True, dtype=torch.float32, output_loading_info=True,
                                           **kwargs)
    except Exception as e:  # noqa: BLE001 - name the directory, not a stack
        raise WeightsError(source.path, f"cannot load weights: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:  # decoders often ship without one; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    weights_file = Path(source.path) / "model.safetensors"
    loaded = len(model.state_dict()) - len(info["missing_keys"])
    return model, tokenizer, {"source": source.describe(), "loaded_tensors": loaded,
                              "new_tensors": sorted(info["missing_keys"]), "sha256": sha256_file(weights_file)}


def check_positions(model: nn.Module, max_length: int, virtual_tokens: int = 0) -> int:
    """Raise unless ``max_length`` (+ prompt tuning's virtual tokens) fits the model's positions."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if config.model_type == "roberta":  # positions start after the padding index
        limit -= config.pad_token_id + 1
    if limit and max_length + virtual_tokens > limit:
        extra = f" + {virtual_tokens} virtual tokens" if virtual_tokens else ""
        raise InvalidArgument("data.max_length", f"{max_length}{extra} exceeds the model's {limit} positions")
    return limit


def auto_class(task: str):
    return AutoModelForSequenceClassification if task == TEXT_CLASSIFICATION else AutoModelForCausalLM


def build_hf_model(meta: dict) -> nn.Module:
    """An untrained model with a run's exact HF config (``model.json``); the caller loads weights."""
    cfg = dict(meta["hf_config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return auto_class(meta["task"]).from_config(config, dtype=torch.float32)


class ClassifierLogits(nn.Module):
    """``forward(input_ids, attention_mask) -> logits`` over an HF (or peft) classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
