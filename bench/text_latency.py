"""MiniLM text classification: PyTorch eager vs the ONNX Runtime session a bundle ships with.

all-MiniLM-L6-v2 (the catalog's local weights) with a 2-label head, exported with edgetune's own
path (export_onnx + create_session, dynamic batch and sequence axes) and parity-checked, then timed
side by side at sequence 32 and 128, batch 1 and 32 (CPU, fp32, full attention masks).

    .venv/bin/python bench/text_latency.py [--lengths 32 128] [--batches 1 32] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetune.export.onnx_export import export_onnx
from edgetune.export.parity import compare, ort_runner, torch_runner
from edgetune.runtime.sessions import create_session
from edgetune.export.specs import EXPORT_SPECS
from edgetune.export.latency import measure_latency
from edgetune.trainers.models.text import create_text_model
from edgetune.trainers.models.weights import resolve_weights
from edgetune.trainers.models.text import ClassifierLogits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", nargs="+", type=int, default=[32, 128])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args()
    spec = EXPORT_SPECS["text_classification"]
    source = resolve_weights("bert", "all-minilm-l6-v2")
    hf, tok, _ = create_text_model("text_classification", "bert", source, 2, 0, [])
    model = ClassifierLogits(hf.eval()).eval()
    rng = np.random.default_rng(0)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, all-MiniLM-L6-v2 + 2-label head, fp32, CPU")
    print(f"{'sequence':>9}{'batch':>6}{'eager ms':>10}{'ORT ms':>9}{'speedup':>9}  parity max abs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sample = {"input_ids": rng.integers(1000, len(tok), (2, 16)), "attention_mask": np.ones((2, 16), np.int64)}
        path = export_onnx(model, tuple(torch.from_numpy(sample[n]) for n in spec.input_names), spec,
                           Path(tmp) / "m.onnx", dim_max={"sequence": 512})
        session = create_session(path, "cpu")
        for length in args.lengths:
            for b in args.batches:
                feed = {"input_ids": rng.integers(1000, len(tok), (b, length)).astype(np.int64),
                        "attention_mask": np.ones((b, length), np.int64)}
                parity = compare("bench", torch_runner(model, spec.input_names), ort_runner(session, spec), [feed])
                iters = args.iters if b == 1 else max(6, args.iters // 5)
                r = measure_latency(model, session, feed, iters=iters, warmup=3)
                rows.append({"sequence": length, "batch": b, "eager_ms": r.eager_ms, "ort_ms": r.ort_ms,
                             "speedup": r.speedup, "parity_max_abs": parity.max_abs_diff})
                print(f"{length:>9}{b:>6}{r.eager_ms:>10.2f}{r.ort_ms:>9.2f}{r.speedup:>8.2f}x  "
                      f"{parity.max_abs_diff:.1e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
