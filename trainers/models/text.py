"""The explicit registry of text model families, their local weights and their tokenizers.

A family is a transformers ``model_type``. Base weights are local HF-format directories only
(``config.json`` + ``model.safetensors`` + tokenizer files; ``trust_remote_code`` is never
set): the built-in ``all-minilm-l6-v2`` entry, an operator's ``$EDGETUNE_CATALOG`` entry, or a
directory path. ``weights: random`` builds the family's tiny config and trains a tokenizer on
the training texts with ``tokenizers``: for tests and smoke runs, never for a real model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, PreTrainedTokenizerFast)

from edgetune.integrity import sha256_file
from edgetune.errors import InvalidArgument, WeightsError


CLASSIFICATION = "text_classification"
GENERATION = "text_generation"


@dataclass(frozen=True)
class TextArchSpec:
    """One family of text models.

    Attributes:
        model_type: the transformers ``model_type`` (config.json) this family covers.
        tasks: which text tasks it serves (encoders classify, decoders generate).
        lora_targets: module-name suffixes LoRA adapts (peft ``target_modules``).
        ia3_targets / ia3_feedforward: IA3 scaled modules, and which of them are feed-forward.
        head: the classification head modules that train with every method (encoders); names
            match module-name suffixes, as peft's ``modules_to_save`` does.
        tokenizer: "wordpiece" or "bpe", for the tiny random-init tokenizer.
        tiny: the tiny random-init config (tests), vocab size set by the trained tokenizer.
    """

    model_type: str
    tasks: tuple[str, ...]
    lora_targets: tuple[str, ...]
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    tokenizer: str
    head: tuple[str, ...] = ("classifier",)
    tiny: dict = field(default_factory=dict)


_ENC_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 256}
_DEC_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 512, "tie_word_embeddings": False}

TEXT_ARCHITECTURES: dict[str, TextArchSpec] = {
    # BERT covers MiniLM (all-MiniLM-L6-v2 is a BertModel). Its pooler trains with the classifier:
    # sentence-embedding checkpoints (mean pooling) never trained it, and on SMS spam a frozen
    # pooler cost LoRA about 1.2 points of macro-F1 (0.968 vs 0.980 after 2 epochs).
    "bert": TextArchSpec("bert", (CLASSIFICATION,), ("query", "value"),
                         ("key", "value", "output.dense"), ("output.dense",), "wordpiece",
                         head=("pooler.dense", "classifier"), tiny=_ENC_TINY),
    "distilbert": TextArchSpec("distilbert", (CLASSIFICATION,), ("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"),
                               ("lin2",), "wordpiece", head=("pre_classifier", "classifier"),
                               tiny={"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64,
                                     "max_position_embeddings": 256}),
    "roberta": TextArchSpec("roberta", (CLASSIFICATION,), ("query", "value"),
                            ("key", "value", "output.dense"), ("output.dense",), "bpe",
                            tiny={**_ENC_TINY, "max_position_embeddings": 258}),
    "gpt2": TextArchSpec("gpt2", (GENERATION,), ("c_attn",), ("c_attn", "mlp.c_proj"), ("mlp.c_proj",), "bpe",
                         tiny={"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512}),
    "llama": TextArchSpec("llama", (GENERATION,), ("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"),
                          ("down_proj",), "bpe", tiny=_DEC_TINY),
    "qwen2": TextArchSpec("qwen2", (GENERATION,), ("q_proj", "v_proj"), ("k_proj", "v_proj", "down_proj"),
                          ("down_proj",), "bpe", tiny=_DEC_TINY),
}
DEFAULT_TEXT_ARCH = {CLASSIFICATION: "bert", GENERATION: "llama"}


def get_text_arch(name: str, task: str) -> TextArchSpec:
    spec = TEXT_ARCHITECTURES.get(name)
    if spec is None:
        raise InvalidArgument("model.arch", f"unknown text architecture {name!r}; choose one of "
                                            f"{', '.join(TEXT_ARCHITECTURES)}")
    if task not in spec.tasks:
        ok = [n for n, s in TEXT_ARCHITECTURES.items() if task in s.tasks]
        raise InvalidArgument("model.arch", f"{name} does not serve {task}; use one of {', '.join(ok)}")
    return spec


@dataclass(frozen=True)
class TextWeights:
    """A resolved text weights choice: an HF directory, or random init."""

    kind: str  # "catalog" | "dir" | "random"
    name: str
    path: str | None = None

    def describe(self) -> str:
        return "random init (tiny config, tokenizer trained on the data)" if self.kind == "random" \
            else f"{self.kind} {self.name} ({self.path})"


def resolve_text_weights(arch: str, weights: str) -> TextWeights:
    """``model.weights`` for text: "catalog", "random", a catalog entry name, or an HF directory."""
    from edgetune.trainers.models.catalog import find_entry

    if weights == "random":
        return TextWeights("random", "random")
    found = find_entry(arch, weights)
    if found is None:
        return TextWeights("dir", weights, str(_check_hf_dir(Path(weights), arch)))
    entry, path = found
    return TextWeights("catalog", entry.name, str(_check_hf_dir(path, arch)))


def _check_hf_dir(p: Path, arch: str) -> Path:
    import json

    if not p.is_dir() or not (p / "config.json").is_file():
        raise WeightsError(str(p), "text weights must be a local HF directory with config.json")
    if not (p / "model.safetensors").is_file():
        raise WeightsError(str(p), "directory holds no model.safetensors (only safetensors are loaded)")
    if not (p / "tokenizer.json").is_file():
        raise WeightsError(str(p), "directory holds no tokenizer.json (a fast tokenizer is required)")
    model_type = json.loads((p / "config.json").read_text()).get("model_type")
    if model_type != TEXT_ARCHITECTURES[arch].model_type:
        raise WeightsError(str(p), f"config.json is model_type {model_type!r}, not {arch!r}")
    return p


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
    encoder = CLASSIFICATION in spec.tasks
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


def create_text_model(task: str, arch: str, source: TextWeights, num_labels: int, seed: int,
                      train_texts: list[str], tokenizer: PreTrainedTokenizerFast | None = None
                      ) -> tuple[nn.Module, PreTrainedTokenizerFast, dict]:
    """Build the model to fine-tune and its tokenizer; returns (model, tokenizer, weights report).

    Args:
        tokenizer: a resumed run's saved tokenizer, used instead of training or loading one, so a
            resumed run keeps tokenizing exactly as it started (and as its bundle will).
    """
    auto = AutoModelForSequenceClassification if task == CLASSIFICATION else AutoModelForCausalLM
    kwargs = {"num_labels": num_labels} if task == CLASSIFICATION else {}
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
