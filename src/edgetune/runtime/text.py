"""Text inference over a verified bundle: tokenization as the manifest says, then ONNX Runtime.

Only ``tokenizers``, numpy and onnxruntime are needed, so this runs on a device without torch
or transformers. The export's parity gate tokenizes its held-out rows through this same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import InvalidArgument
from edgetune.prompting import encode_prompt

from .runtime import create_session, softmax, verify_bundle


class TextEncoder:
    """Tokenize like training did: special tokens added, truncated to ``max_length``, right-padded
    to the longest row of the batch with ``pad_token_id`` (attention mask 0 on padding)."""

    def __init__(self, bundle_dir: str | Path, tokenization: dict):
        from tokenizers import Tokenizer

        self.tokenization = tokenization
        self.max_length = int(tokenization["max_length"])
        self.pad_id = int(tokenization["pad_token_id"])
        self.tokenizer = Tokenizer.from_file(str(Path(bundle_dir) / tokenization["file"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

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


def tokenization_of(tokenizer, max_length: int) -> dict:
    """The manifest's ``tokenization`` section for an HF fast tokenizer saved as ``tokenizer/``."""
    return {"file": "tokenizer/tokenizer.json", "max_length": max_length, "add_special_tokens": True,
            "truncation": "right", "padding_side": "right", "pad_token_id": tokenizer.pad_token_id,
            "special_tokens": {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}}


@dataclass
class TextPrediction:
    text: str
    top: list[tuple[str, float]]  # (label, probability), best first


class TextBundlePredictor:
    """Loads a valid text classification bundle (hashes verified) and classifies texts."""

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        self.dir = Path(bundle_dir)
        self.manifest = verify_bundle(self.dir)
        if self.manifest.get("task") != "text_classification":
            raise InvalidArgument("bundle", f"{bundle_dir} is a {self.manifest.get('task')} bundle, "
                                            "not text classification")
        self.labels: list[str] = self.manifest["labels"]
        self.encoder = TextEncoder(self.dir, self.manifest["tokenization"])
        self.session = create_session(self.dir / "model.onnx", device, threads, spinning)

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.session.run(None, self.encoder.encode(texts))[0]

    def predict_texts(self, texts: list[str], top_k: int = 5, batch_size: int = 32) -> list[TextPrediction]:
        if top_k < 1:
            raise InvalidArgument("top_k", f"must be >= 1, got {top_k}")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InvalidArgument(f"texts[{i}]", "must be a non-empty string")
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i:i + batch_size]
            for text, row in zip(chunk, softmax(self.logits(chunk))):
                idx = np.argsort(-row)[:top_k]
                out.append(TextPrediction(text, [(self.labels[j], float(row[j])) for j in idx]))
        return out


class TextGenerator:
    """Loads a valid text generation bundle (hashes verified) and streams greedy completions.

    The prompt is wrapped as the manifest's ``prompt_format`` says, tokenized with the bundle's
    tokenizer, and decoded incrementally with the KV cache in ONNX Runtime.
    """

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True):
        from tokenizers import Tokenizer

        from .decoder import DecoderIO, OrtGenerator

        self.dir = Path(bundle_dir)
        self.manifest = verify_bundle(self.dir)
        if self.manifest.get("task") != "text_generation":
            raise InvalidArgument("bundle", f"{bundle_dir} is a {self.manifest.get('task')} bundle, "
                                            "not text generation")
        gen = self.manifest["generation"]
        self.eos_token_id = gen["eos_token_id"]
        self.max_new_tokens = int(gen["max_new_tokens"])
        self.max_positions = int(gen["max_positions"])
        self.tokenizer = Tokenizer.from_file(str(self.dir / self.manifest["tokenization"]["file"]))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        past = None
        if gen.get("prompt_past"):
            from safetensors.numpy import load_file

            arrays = load_file(str(self.dir / gen["prompt_past"]))
            past = [arrays[f"past.{i}"] for i in range(len(arrays))]
        session = create_session(self.dir / "model.onnx", device, threads, spinning)
        self.generator = OrtGenerator(session, DecoderIO.from_dict(gen["decoder_io"]), past)
        self.reserved_positions = past[0].shape[2] if past else 0  # prompt tuning's virtual tokens

    def prompt_ids(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, self.manifest["prompt_format"], prompt)

    def stream(self, prompt: str, max_new_tokens: int | None = None):
        """Yield (token id, text piece) pairs; the pieces concatenate to the decoded completion
        (less a trailing incomplete UTF-8 character, which is held back until it completes)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgument("prompt", "must be a non-empty string")
        limit = self.max_new_tokens if not max_new_tokens else max_new_tokens
        room = self.max_positions - self.reserved_positions
        if not 1 <= limit < room:
            raise InvalidArgument("max_new_tokens", f"must be in [1, {room - 1}] (the model has {self.max_positions} "
                                                    f"positions), got {limit}")
        # The model cannot see more than max_positions tokens: keep the end of a long prompt.
        ids = self.prompt_ids(prompt)[-(room - limit):]
        tokens, text = [], ""
        for token in self.generator.stream(ids, limit, self.eos_token_id):
            if token == self.eos_token_id:
                return
            tokens.append(token)
            # Decode the whole completion each step: a BPE piece may be half of a UTF-8 character.
            full = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if full.endswith("\ufffd"):
                yield token, ""
                continue
            yield token, full[len(text):]
            text = full

    def generate(self, prompt: str, max_new_tokens: int | None = None) -> str:
        return "".join(piece for _, piece in self.stream(prompt, max_new_tokens))
