"""Causal LMs (GPT-2, Llama, Qwen2 families) to ONNX with a KV cache, greedy generation in ONNX Runtime,
and the generation parity gate.

One graph serves prefill and decode. Its past length is always >= 1, which keeps every axis dynamic
without a zero-length special case: the first step feeds a one-long all-zero past whose attention
mask entry is 0 (so no token ever attends to it), or, for prompt tuning, the virtual tokens' KV
with mask 1. Position ids are an explicit input, ``cumsum(attention_mask) - 1``, so the dummy slot
takes no position and virtual tokens shift the real ones exactly as in peft.

Inference (``OrtGenerator``) needs numpy and onnxruntime only; torch is imported lazily by the
export and reference functions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetune.errors import InvalidArgument

from .specs import FP32, FP32_TEXT, Tolerance

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

    from .parity import ParityReport

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


def _flat_cache_wrapper(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with flat past tensors in and flat presents out, as the ONNX graph needs."""
    import torch
    from transformers import DynamicCache

    class FlatCacheDecoder(torch.nn.Module):
        def __init__(self, lm: torch.nn.Module):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = DynamicCache(config=self.lm.config)
            for i in range(len(past) // 2):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          cache=cache, use_cache=True)
            presents = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
            return (out.logits, *presents)

    return FlatCacheDecoder(model).eval()


def describe_decoder(model: torch.nn.Module) -> DecoderIO:
    """Cache geometry read from one real forward pass, so every family's head layout is right."""
    import torch

    from transformers import DynamicLayer

    with torch.inference_mode():
        out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True)
    # Sliding-window or linear-attention layers trim or replace their past: the graph's contract
    # (present = past + new tokens, one mask for all layers) would not hold.
    if any(type(layer) is not DynamicLayer for layer in out.cache.layers):
        kinds = sorted({type(layer).__name__ for layer in out.cache.layers})
        raise InvalidArgument("model", f"only full-attention KV caches are supported, got {kinds}")
    keys = out.cache.layers[0].keys
    return DecoderIO(num_layers=len(out.cache.layers), num_kv_heads=int(keys.shape[1]),
                     head_dim=int(keys.shape[3]), vocab_size=int(out.logits.shape[-1]),
                     dtype=str(keys.dtype).removeprefix("torch."))


def export_decoder(model: torch.nn.Module, path: str | Path, opset: int = 20,
                   metadata: dict[str, object] | None = None) -> DecoderIO:
    """Export an eval-mode causal LM to one self-contained ONNX file with a KV cache.

    Args:
        model: a plain ``PreTrainedModel`` (adapters merged by the caller; for prompt tuning the
            base model, with ``prompt_prefix_past`` as the initial past).
        metadata: written into ``metadata_props`` (values JSON-encoded unless already strings);
            ``edgetune.decoder_io`` is always added.

    Returns:
        The graph's I/O description.
    """
    import onnx
    import torch

    if hasattr(model, "get_base_model"):
        raise InvalidArgument("model", "a PeftModel: merge the adapters, or pass get_base_model() for prompt tuning")
    model = model.eval()
    io = describe_decoder(model)
    if io.dtype != "float32":
        raise InvalidArgument("model", f"decoder export is fp32 only, the model is {io.dtype}")
    # Example sizes >= 2: torch.export specializes axes whose example size is 0 or 1.
    batch, seq, past = 2, 3, 2
    kv_shape = (batch, io.num_kv_heads, past, io.head_dim)
    sample = (torch.zeros(batch, seq, dtype=torch.long), torch.ones(batch, past + seq, dtype=torch.long),
              torch.arange(past, past + seq).expand(batch, seq), tuple(torch.zeros(kv_shape) for _ in io.past_names))
    b, s, p = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past_sequence")
    dims = ({0: b, 1: s}, {0: b, 1: torch.export.Dim.DYNAMIC}, {0: b, 1: s}, tuple({0: b, 2: p} for _ in io.past_names))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # our Dims share names
        program = torch.onnx.export(
            _flat_cache_wrapper(model), sample, dynamo=True, input_names=io.input_names,
            output_names=io.output_names, dynamic_shapes=dims, opset_version=opset, external_data=False,
            optimize=True, verbose=False,
        )
    proto = program.model_proto
    _name_axes(proto, io)
    for key, value in {**(metadata or {}), "edgetune.decoder_io": io.to_dict()}.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return io


def _name_axes(proto, io: DecoderIO) -> None:
    """Readable symbolic axis names on the graph's inputs and outputs (the exporter picks e.g. ``s53``)."""
    names = {io.input_ids: ["batch", "sequence"], io.position_ids: ["batch", "sequence"],
             io.attention_mask: ["batch", "past_sequence + sequence"],
             io.logits: ["batch", "sequence", None]}
    names.update({n: ["batch", None, "past_sequence", None] for n in io.past_names})
    names.update({n: ["batch", None, "past_sequence + sequence", None] for n in io.present_names})
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim, name in zip(value.type.tensor_type.shape.dim, names[value.name]):
            if name is not None:
                dim.dim_param = name


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


def prompt_prefix_past(peft_model: torch.nn.Module) -> list[np.ndarray]:
    """KV of a peft prompt-tuning model's virtual tokens, as an ``OrtGenerator`` initial past.

    The base model runs once on the prompt encoder's embeddings at positions ``0..n-1``; with this
    past (mask 1) the exported base model continues exactly as the peft model does.
    """
    import torch

    config = getattr(peft_model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False) or config.peft_type.value != "PROMPT_TUNING":
        raise InvalidArgument("model", "not a peft prompt-tuning model")
    base = peft_model.get_base_model().eval()
    with torch.inference_mode():
        prompts = peft_model.get_prompt(batch_size=1).to(base.dtype)
        n = prompts.shape[1]
        out = base(inputs_embeds=prompts, attention_mask=torch.ones(1, n, dtype=torch.long),
                   position_ids=torch.arange(n)[None], use_cache=True)
    return [t.float().numpy().copy() for layer in out.cache.layers for t in (layer.keys, layer.values)]


def check_generation_parity(reference_model: torch.nn.Module, session: ort.InferenceSession, io: DecoderIO,
                            prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | None = None,
                            tolerance: Tolerance = FP32_TEXT, initial_past: list[np.ndarray] | None = None,
                            large_batch: int = 16, reference: str = "pytorch", precision: str = FP32
                            ) -> ParityReport:
    """Greedy generation in ONNX Runtime must follow PyTorch's, with ``parity.py``'s rules.

    Per prompt (batch 1), the logits of every step (prefill's last position, then each decode
    step) must be within ``tolerance``, and the token must be PyTorch's wherever PyTorch's top-2
    gap is a decision. A differing token ends that prompt's comparison (the sequences part); it
    fails the gate unless PyTorch's own choice was a tie within the tolerance. Stopping early or
    late (eos) with no differing token fails too. Then the prompts,
    left-padded in batches of ``large_batch``, go through one prefill each whose logits at every
    real position must match PyTorch's unpadded forward pass: this exercises the dynamic batch
    and sequence axes.

    Returns the report when it passes; raises ParityError carrying the report otherwise.
    """
    import torch

    from edgetune.trainers.generation import greedy_with_logits

    from .parity import CaseBuilder, ParityReport, batches_of, raise_unless_passed

    if not prompts:
        raise InvalidArgument("prompts", "needs at least one prompt")
    reference_model = reference_model.eval()
    generator = OrtGenerator(session, io, initial_past)
    report = ParityReport(precision, tolerance, session.get_providers())
    greedy = CaseBuilder(f"greedy generation, {len(prompts)} held-out prompts, up to {max_new_tokens} new tokens",
                         reference, "onnxruntime", tolerance)
    for n, prompt in enumerate(prompts):
        ref_tokens, ref_logits = greedy_with_logits(reference_model, prompt, max_new_tokens, eos_token_id)
        got = list(generator.stream_logits(prompt, max_new_tokens, eos_token_id))
        for (token, row), ref_token, ref_row in zip(got, ref_tokens, ref_logits):
            greedy.add_values(ref_row[None], row[None], 1, 1)
            greedy.add_decision(ref_row, token == ref_token)
            if token != ref_token:
                break
        else:
            if len(got) != len(ref_tokens):
                report.problems.append(f"{reference}: prompt {n} gives {len(got)} tokens in onnxruntime, "
                                       f"{len(ref_tokens)} in PyTorch, with no differing token")
    report.cases.append(greedy.build())

    prefill = CaseBuilder(f"prefill of {len(prompts)} held-out prompts, left-padded, batch {large_batch}",
                          reference, "onnxruntime", tolerance)
    for chunk in batches_of(prompts, large_batch):
        logits, mask = generator.prefill(chunk)
        width = mask.shape[1]
        for n, prompt in enumerate(chunk):
            with torch.inference_mode():
                ids = torch.tensor([prompt], dtype=torch.long)
                ref = reference_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -len(prompt):]
            prefill.add_values(ref.float().numpy(), logits[n, width - len(prompt):], 1, len(chunk))
    report.cases.append(prefill.build())
    return raise_unless_passed(report)
