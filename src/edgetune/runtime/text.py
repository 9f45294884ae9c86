"""Text inference over a verified bundle: tokenization as the manifest says, then ONNX Runtime.

Only ``tokenizers``, numpy and onnxruntime are needed, so this runs on a device without torch
or transformers. The export's parity gate tokenizes its held-out rows through this same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.errors import InvalidArgument
from edgetune.tasks import TEXT_CLASSIFICATION

from .manifest import BundleModel
from .scores import Prediction, check_top_k, predictions

TASK = TEXT_CLASSIFICATION


class TextEncoder:
    """Tokenize as the manifest says (and training did): the text's tokens without special tokens,
    cut to ``max_length - len(prefix) - len(suffix)``, between the template's ``prefix_ids`` and
    ``suffix_ids`` (``max_length`` counts them); rows right-padded to the batch's longest with
    ``pad_token_id``, attention mask 1 on tokens and 0 on padding. Bundles from before the
    template let the tokenizer add and truncate."""

    def __init__(self, bundle_dir: str | Path, tokenization: dict):
        from tokenizers import Tokenizer

        self.tokenization = tokenization
        self.max_length = int(tokenization["max_length"])
        self.pad_id = int(tokenization["pad_token_id"])
        self.template = tokenization.get("template")
        self.tokenizer = Tokenizer.from_file(str(Path(bundle_dir) / tokenization["file"]))
        self.tokenizer.no_padding()
        if self.template is None:
            self.tokenizer.enable_truncation(self.max_length)
        else:
            self.tokenizer.no_truncation()

    def ids(self, texts: list[str]) -> list[list[int]]:
        if self.template is None:
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]
        prefix, suffix = list(self.template["prefix_ids"]), list(self.template["suffix_ids"])
        room = self.max_length - len(prefix) - len(suffix)
        return [prefix + e.ids[:room] + suffix for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (int64, [batch, longest])."""
        rows = self.ids(texts)
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def classifier_tokenization(tokenizer, max_length: int) -> dict:
    """A text classifier's ``tokenization``: ``tokenization_of`` plus the special-token template and
    the padding, so a device tokenizer that only splits text (no truncation, no post-processor)
    reproduces training's ids. Raises ValueError for a post-processor that is not a fixed
    prefix and suffix around one sequence."""
    probe = "a b c"
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    starts = [i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare]
    if not bare or not starts:
        raise ValueError("the tokenizer's special tokens are not a fixed prefix and suffix")
    prefix, suffix = full[:starts[0]], full[starts[0] + len(bare):]
    if max_length <= len(prefix) + len(suffix):
        raise ValueError(f"max_length {max_length} leaves no room between {len(prefix) + len(suffix)} special tokens")
    return {**tokenization_of(tokenizer, max_length), "add_special_tokens": False,
            "truncation": "right, of the text's own ids, before the template",
            "max_length_counts_special_tokens": True,
            "template": {"prefix_ids": prefix, "suffix_ids": suffix,
                         "rule": "prefix_ids + ids(text, no special tokens)[:max_length - len(prefix_ids) - "
                                 "len(suffix_ids)] + suffix_ids"},
            "padding": {"side": "right", "to": "longest row of the batch", "pad_token_id": tokenizer.pad_token_id,
                        "attention_mask": "1 on tokens, 0 on padding"}}


def tokenization_of(tokenizer, max_length: int) -> dict:
    """The manifest's ``tokenization`` section for an HF fast tokenizer saved as ``tokenizer/``."""
    return {"file": "tokenizer/tokenizer.json", "max_length": max_length, "add_special_tokens": True,
            "truncation": "right", "padding_side": "right", "pad_token_id": tokenizer.pad_token_id,
            "special_tokens": {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}}


class TextPredictor(BundleModel):
    """Loads a valid text classification bundle (hashes verified) and classifies texts."""

    task = TASK

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, variant: str | None = None):
        super().__init__(bundle_dir, device, threads, spinning, variant)
        self.encoder = TextEncoder(self.dir, self.manifest["tokenization"])

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.session.run(None, self.encoder.encode(texts))[0]

    def predict_texts(self, texts: list[str], top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        check_top_k(top_k)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InvalidArgument(f"texts[{i}]", "must be a non-empty string")
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i:i + batch_size]
            out += predictions(chunk, self.logits(chunk), self.labels, top_k)
        return out
