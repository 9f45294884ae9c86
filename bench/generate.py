"""Greedy generation tokens/s: ONNX Runtime with and without the KV cache, and PyTorch, in one run (CPU, fp32).

A small random Llama-style decoder is exported with ``export_decoder`` (the graph bundles ship),
its generation parity checked, then the three ways of generating are timed interleaved, round by
round, on the same prompt; the median round is reported. Every mode generates exactly
``--new-tokens`` tokens (no eos), so tokens/s = new tokens / wall time, prefill included.

    .venv/bin/python bench/generate.py [--layers 4] [--hidden 256] [--prompt 32] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from edgetune.export.decoder import check_generation_parity, export_decoder
from edgetune.runtime.generation import OrtGenerator
from edgetune.trainers.generation import torch_greedy
from edgetune.runtime.sessions import create_session


def build(layers: int, hidden: int, vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=hidden // 32,
                         num_key_value_heads=hidden // 64, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    model = build(args.layers, args.hidden, args.vocab)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    prompt = np.random.default_rng(0).integers(3, args.vocab, args.prompt).tolist()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"torch threads, Llama {args.layers} layers x {args.hidden} ({params:.1f}M params, GQA "
          f"{model.config.num_attention_heads}/{model.config.num_key_value_heads} heads), fp32, CPU")
    print(f"# prompt {args.prompt} tokens, {args.new_tokens} new tokens, greedy, median of {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other processes skew PyTorch most)")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        io = export_decoder(model, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t
        # No spinning: idle ORT threads would otherwise steal the cores from the interleaved PyTorch runs.
        session = create_session(Path(tmp) / "model.onnx", "cpu", spinning=False)
        parity = check_generation_parity(model, session, io, [prompt, prompt[:5]], 16, None)
        print(f"# export {export_s:.1f} s; {parity.summary()}")
        generator = OrtGenerator(session, io)
        modes = {
            "ORT, KV cache": lambda: generator.generate(prompt, args.new_tokens, None, use_cache=True),
            "ORT, no cache": lambda: generator.generate(prompt, args.new_tokens, None, use_cache=False),
            "PyTorch, KV cache": lambda: torch_greedy(model, prompt, args.new_tokens, None),
        }
        outputs = {name: run() for name, run in modes.items()}  # warm-up, and the outputs must agree
        if len({tuple(o) for o in outputs.values()}) != 1:
            raise SystemExit(f"the modes generate different tokens: {outputs}")
        times: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(args.rounds):
            for name, run in modes.items():
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)

    base = statistics.median(times["ORT, KV cache"])
    print(f"{'mode':<20}{'ms / sequence':>15}{'tokens/s':>10}{'vs ORT cache':>14}")
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append({"mode": name, "ms": median * 1000, "tokens_per_s": args.new_tokens / median})
        print(f"{name:<20}{median * 1000:>15.1f}{args.new_tokens / median:>10.1f}{median / base:>13.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "parity": parity.to_dict(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
