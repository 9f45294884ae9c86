"""Causal LMs (GPT-2, Llama, Qwen2 families) to ONNX with a KV cache, and the generation parity gate.

The graph's contract (one graph for prefill and decode, a past that is never empty, explicit
position ids) and its ONNX Runtime driver ``OrtGenerator`` live in ``edgetune.runtime.generation``,
which devices run; this module builds that graph from a PyTorch model and checks it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetune.errors import InvalidArgument
from edgetune.runtime.generation import DecoderIO, OrtGenerator

from .specs import FP32, FP32_TEXT, Tolerance

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

    from .parity import ParityReport


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
