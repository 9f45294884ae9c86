"""Greedy generation over a verified bundle: a causal LM exported with a KV cache, in ONNX Runtime.

Numpy, ``tokenizers`` and onnxruntime only. One graph serves prefill and decode; its past length
is always >= 1, which keeps every axis dynamic without a zero-length special case: the first step
feeds a one-long all-zero past whose attention mask entry is 0 (so no token ever attends to it),
or, for prompt tuning, the virtual tokens' KV with mask 1. Position ids are an explicit input,
``cumsum(attention_mask) - 1``, so the dummy slot takes no position and virtual tokens shift the
real ones exactly as in peft. ``DecoderIO`` (in the manifest) names the graph's inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetune.errors import InvalidArgument
from edgetune.tasks import TEXT_GENERATION

from .manifest import BundleModel
from .prompting import encode_prompt

if TYPE_CHECKING:
    import onnxruntime as ort

TASK = TEXT_GENERATION
_PAD_POSITION = 1  # position id fed to padding tokens; their outputs are never read


@dataclass
class DecoderIO:
    """Everything a device needs to drive an exported decoder graph (stored in a bundle manifest)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    dtype: str = "float32"
    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    position_ids: str = "position_ids"
    logits: str = "logits"
    past_key: str = "past_key_values.{i}.key"
    past_value: str = "past_key_values.{i}.value"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"
    dummy_past_length: int = 1

    @property
    def past_names(self) -> list[str]:
        """Past inputs, layer by layer, key before value."""
        return [n.format(i=i) for i in range(self.num_layers) for n in (self.past_key, self.past_value)]

    @property
    def present_names(self) -> list[str]:
        return [n.format(i=i) for i in range(self.num_layers) for n in (self.present_key, self.present_value)]

    @property
    def input_names(self) -> list[str]:
        return [self.input_ids, self.attention_mask, self.position_ids, *self.past_names]

    @property
    def output_names(self) -> list[str]:
        return [self.logits, *self.present_names]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """The dummy past of the first step (masked out by a 0 in the attention mask)."""
        shape = (batch, self.num_kv_heads, self.dummy_past_length, self.head_dim)
        return [np.zeros(shape, dtype=self.dtype) for _ in range(2 * self.num_layers)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecoderIO:
        return cls(**data)


def left_pad(prompts: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and their 0/1 mask, left-padded to the longest prompt (int64)."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p):] = p
            mask[row, width - len(p):] = 1
    return ids, mask


def position_ids(full_mask: np.ndarray, seq: int) -> np.ndarray:
    """Positions of the last ``seq`` tokens: ``cumsum(mask) - 1`` over past and new tokens."""
    pos = np.cumsum(full_mask, axis=-1) - 1
    pos[full_mask == 0] = _PAD_POSITION
    return np.ascontiguousarray(pos[:, -seq:], dtype=np.int64)


class OrtGenerator:
    """Greedy decoding of an exported decoder in ONNX Runtime (numpy only, batch 1).

    Args:
        initial_past: per-layer key/value arrays (``2 * num_layers``, batch 1) every sequence starts
            from, e.g. ``prompt_prefix_past``; attended to (mask 1). Default: the masked dummy past.
    """

    def __init__(self, session: ort.InferenceSession, io: DecoderIO, initial_past: list[np.ndarray] | None = None):
        expected = [i.name for i in session.get_inputs()]
        if expected != io.input_names:
            raise InvalidArgument("io", f"session inputs {expected[:4]}... do not match {io.input_names[:4]}...")
        if initial_past is not None and len(initial_past) != 2 * io.num_layers:
            raise InvalidArgument("initial_past", f"needs {2 * io.num_layers} arrays, got {len(initial_past)}")
        self.session = session
        self.io = io
        self.initial_past = initial_past

    def start(self, batch: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The past and its attention mask every sequence starts from."""
        if self.initial_past is None:
            return self.io.empty_past(batch), np.zeros((batch, self.io.dummy_past_length), dtype=np.int64)
        past = [np.ascontiguousarray(np.repeat(p, batch, axis=0), dtype=self.io.dtype) for p in self.initial_past]
        return past, np.ones((batch, past[0].shape[2]), dtype=np.int64)

    def forward(self, ids: np.ndarray, full_mask: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """One graph run: logits ``[batch, seq, vocab]`` and the presents (the next step's past)."""
        feeds = {self.io.input_ids: ids, self.io.attention_mask: full_mask,
                 self.io.position_ids: position_ids(full_mask, ids.shape[1])}
        feeds.update(zip(self.io.past_names, past))
        logits, *presents = self.session.run(self.io.output_names, feeds)
        return logits, presents

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Logits of a left-padded batch of prompts, and its ``[batch, seq]`` token mask."""
        ids, mask = left_pad(prompts)
        past, past_mask = self.start(len(prompts))
        logits, _ = self.forward(ids, np.concatenate([past_mask, mask], axis=1), past)
        return logits, mask

    def stream_logits(self, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | None = None,
                      use_cache: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Greedy tokens with the logits (``[vocab]``) each was picked from."""
        if not prompt_ids:
            raise InvalidArgument("prompt_ids", "must hold at least one token")
        if max_new_tokens < 0:
            raise InvalidArgument("max_new_tokens", f"must be >= 0, got {max_new_tokens}")
        start_past, start_mask = self.start(1)
        tokens = list(prompt_ids)
        ids = np.asarray([tokens], dtype=np.int64)
        past, mask = start_past, np.concatenate([start_mask, np.ones_like(ids)], axis=1)
        for _ in range(max_new_tokens):
            logits, presents = self.forward(ids, mask, past)
            row = logits[0, -1]
            token = int(row.argmax())
            yield token, row
            if token == eos_token_id:
                return
            tokens.append(token)
            if use_cache:
                past, ids = presents, np.asarray([[token]], dtype=np.int64)
                mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            else:  # the whole sequence again, from the starting past
                ids = np.asarray([tokens], dtype=np.int64)
                mask = np.concatenate([start_mask, np.ones_like(ids)], axis=1)

    def stream(self, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | None = None,
               use_cache: bool = True) -> Iterator[int]:
        """Greedy new token ids, one at a time (the eos token, if produced, is the last)."""
        for token, _ in self.stream_logits(prompt_ids, max_new_tokens, eos_token_id, use_cache):
            yield token

    def generate(self, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | None = None,
                 use_cache: bool = True) -> list[int]:
        """Greedy decoding; returns only the new tokens."""
        return list(self.stream(prompt_ids, max_new_tokens, eos_token_id, use_cache))


class TextGenerator(BundleModel):
    """Loads a valid text generation bundle (hashes verified) and streams greedy completions.

    The prompt is wrapped as the manifest's ``prompt_format`` says, tokenized with the bundle's
    tokenizer, and decoded incrementally with the KV cache in ONNX Runtime.
    """

    task = TASK

    def __init__(self, bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                 spinning: bool = True, variant: str | None = None):
        from tokenizers import Tokenizer

        super().__init__(bundle_dir, device, threads, spinning, variant)
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
        self.generator = OrtGenerator(self.session, DecoderIO.from_dict(gen["decoder_io"]), past)
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
