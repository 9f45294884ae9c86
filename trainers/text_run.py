"""Text runs on disk: rebuilding the best checkpoint (plain and, for peft methods, unmerged).

The plain model is what gets exported; the unmerged peft model (base weights + the saved
adapter) is what the export's three-way parity gate compares the merge against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from edgetune.integrity import sha256_file
from edgetune.errors import NotFound, WeightsError

from edgetune.trainers.methods import PromptPrefixed
from edgetune.trainers.run import RunFiles, read_model_meta
from edgetune.trainers.models.text import CLASSIFICATION, load_tokenizer


class ClassifierLogits(nn.Module):
    """``forward(input_ids, attention_mask) -> logits`` over an HF (or peft) classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


@dataclass(frozen=True)
class TextRunModel:
    """A text run's best checkpoint: ``model`` is plain (adapters merged), eval mode, CPU.

    For classification ``model`` is ``forward(input_ids, attention_mask) -> logits`` (prompt
    tuning included); for generation it is the HF causal LM itself.
    """

    model: nn.Module
    tokenizer: object
    classes: list[str]
    meta: dict

    @property
    def task(self) -> str:
        return self.meta["task"]


def build_hf_model(meta: dict) -> nn.Module:
    """An untrained model with the run's exact HF config (weights are loaded by the caller)."""
    cfg = dict(meta["hf_config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    auto = AutoModelForSequenceClassification if meta["task"] == CLASSIFICATION else AutoModelForCausalLM
    return auto.from_config(config, dtype=torch.float32)


def _load_into(model: nn.Module, path: Path) -> None:
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    # Tied weights (e.g. lm_head = embeddings) may be absent from the file; anything else is an error.
    missing = [k for k in missing if k not in getattr(model, "all_tied_weights_keys", {}) or {}]
    if missing or unexpected:
        raise WeightsError(str(path), f"does not fit the run's model: missing {missing[:3]}, "
                                      f"unexpected {unexpected[:3]}")


def load_text_run(run_dir: str | Path) -> TextRunModel:
    """Rebuild the best checkpoint of a text run (plain, eval mode, fp32, CPU)."""
    files = RunFiles(Path(run_dir))
    meta = read_model_meta(run_dir)
    if meta.get("task") not in (CLASSIFICATION, "text_generation"):
        raise NotFound(str(run_dir), "not a text run")
    hf = build_hf_model(meta)
    _load_into(hf, files.weights)
    hf.eval()
    model: nn.Module = hf
    if meta["task"] == CLASSIFICATION:
        model = ClassifierLogits(hf)
        if meta["method"] == "prompt_tuning":
            model = PromptPrefixed(hf, load_file(str(files.prompt))["prompt"])
    return TextRunModel(model.eval(), load_tokenizer(files.tokenizer), list(meta.get("classes") or []), meta)


def load_unmerged(run_dir: str | Path) -> nn.Module | None:
    """The peft model as trained (base + adapter, not merged), or None for full / linear probe.

    The base comes from the run (random-init runs) or from the recorded local weights, whose
    sha256 must still match what the run was trained on.
    """
    from peft import PeftModel

    files = RunFiles(Path(run_dir))
    meta = read_model_meta(run_dir)
    if not files.adapter.is_dir():
        return None
    base = build_hf_model(meta)
    base_info = meta["base"]
    if files.base.is_file():
        _load_into(base, files.base)
    else:
        path = Path(base_info["path"]) / "model.safetensors"
        if not path.is_file() or sha256_file(path) != base_info.get("sha256"):
            raise WeightsError(str(path), "base weights are missing or changed since training; "
                                          "the adapter cannot be checked against them")
        loaded = AutoModelForSequenceClassification if meta["task"] == CLASSIFICATION else AutoModelForCausalLM
        kwargs = {"num_labels": len(meta["classes"])} if meta["task"] == CLASSIFICATION else {}
        base = loaded.from_pretrained(base_info["path"], local_files_only=True, trust_remote_code=False,
                                      use_safetensors=True, dtype=torch.float32, **kwargs)
    peft_model = PeftModel.from_pretrained(base, str(files.adapter), is_trainable=False).eval()
    return ClassifierLogits(peft_model).eval() if meta["task"] == CLASSIFICATION else peft_model


def parity_texts(run_dir: str | Path) -> list[dict]:
    """The held-out validation rows saved for the export parity gate."""
    path = RunFiles(Path(run_dir)).parity_texts
    if not path.is_file():
        raise NotFound(str(run_dir), "run has no parity_samples.json")
    return json.loads(path.read_text())
