"""PyTorch eager vs ONNX Runtime latency at batch 1 and 32, side by side in one run (CPU, fp32).

Each model is exported with edgetune's own path (export_onnx + create_session, the sessions that
bundles ship with), its parity checked, then both runtimes timed interleaved on the same input.

The physical limit: the machine's fp32 matmul throughput is measured first (best of torch.mm at
2048 and 4096), each model's FLOPs are counted with torch's FlopCounterMode, and every latency is
shown as achieved GFLOP/s and as a share of that peak. A runtime cannot beat 100%, so
``peak_ms`` = FLOPs / peak is the fastest any fp32 runtime can go on this machine.

    .venv/bin/python bench/latency.py [--models resnet18 vit_tiny_patch16_224 ...] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgetune.export.onnx_export import export_onnx
from edgetune.export.parity import ImageContract, check_parity
from edgetune.runtime.sessions import create_session
from edgetune.export.specs import EXPORT_SPECS
from edgetune.export.latency import measure_latency
from edgetune.runtime.imaging import Preprocessing
from edgetune.trainers.models.image import create_model, default_normalization
from edgetune.trainers.models.image import load_base_weights
from edgetune.trainers.models.weights import resolve_weights

DEFAULT_MODELS = ["resnet18", "vit_tiny_patch16_224", "efficientnet_lite0", "mobilenetv3_large_100"]


def build(arch: str, size: int) -> torch.nn.Module:
    try:
        source = resolve_weights(arch, "catalog")
    except Exception:  # noqa: BLE001 - no local weights: latency does not depend on the values
        source = resolve_weights(arch, "random")
    torch.manual_seed(0)
    model = create_model(arch, 10, size, source.create_kwargs)
    load_base_weights(model, source)
    torch.nn.init.normal_(model.get_submodule(model.pretrained_cfg["classifier"]).weight, std=0.01)
    return model.eval()


def measured_peak_gflops() -> float:
    """Best fp32 GEMM throughput torch reaches here (all threads), in GFLOP/s."""
    best = 0.0
    for n in (2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        reps = 8 if n == 2048 else 3
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    spec = EXPORT_SPECS["image_classification"]
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, input {args.size}x{args.size}, fp32, CPU")
    peak = measured_peak_gflops()
    print(f"# measured fp32 GEMM peak: {peak:.0f} GFLOP/s")
    print(f"{'model':<24}{'batch':>6}{'GFLOP':>8}{'eager ms':>10}{'ORT ms':>9}{'speedup':>9}"
          f"{'peak ms':>9}{'eager %pk':>10}{'ORT %pk':>9}  parity max abs")
    rows = []
    for arch in args.models:
        model = build(arch, args.size)
        with tempfile.TemporaryDirectory() as tmp:
            x = np.random.default_rng(0).standard_normal((max(args.batches), 3, args.size, args.size)).astype(np.float32)
            path = export_onnx(model, (torch.from_numpy(x[:2]),), spec, Path(tmp) / "m.onnx")
            session = create_session(path, "cpu")
            pixels = np.random.default_rng(1).integers(0, 256, (32, args.size, args.size, 3), dtype=np.uint8)
            contract = ImageContract(Preprocessing(args.size, *default_normalization(model)), list("0123456789"))
            parity = check_parity(model, session, spec, pixels, contract, contract)
            for b in args.batches:
                iters = args.iters if b == 1 else max(6, args.iters // 5)
                r = measure_latency(model, session, x[:b], iters=iters, warmup=3)
                gflop = count_flops(model, torch.from_numpy(x[:b])) / 1e9
                peak_ms = gflop / peak * 1000
                rows.append({"model": arch, "batch": b, "gflop": gflop, "eager_ms": r.eager_ms, "ort_ms": r.ort_ms,
                             "speedup": r.speedup, "peak_ms": peak_ms, "parity_max_abs": parity.max_abs_diff, "parity_margin": parity.margin})
                print(f"{arch:<24}{b:>6}{gflop:>8.2f}{r.eager_ms:>10.2f}{r.ort_ms:>9.2f}{r.speedup:>8.2f}x"
                      f"{peak_ms:>9.2f}{peak_ms / r.eager_ms:>10.0%}{peak_ms / r.ort_ms:>9.0%}  "
                      f"{parity.max_abs_diff:.1e} (margin {parity.margin:.3f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
