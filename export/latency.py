"""Side-by-side latency of PyTorch eager and ONNX Runtime on the same inputs (one process, one run)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn


@dataclass
class LatencyResult:
    batch_size: int
    eager_ms: float  # median
    ort_ms: float  # median

    @property
    def speedup(self) -> float:
        return self.eager_ms / self.ort_ms


def median_ms(fn: Callable[[], object], iters: int, warmup: int = 0) -> float:
    """Median wall time of ``iters`` calls of ``fn`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure_latency(model: nn.Module, session: ort.InferenceSession, x: np.ndarray | dict[str, np.ndarray],
                    iters: int = 30, warmup: int = 5) -> LatencyResult:
    """Median latency of eager ``model`` and ``session`` on batch ``x`` (CPU, fp32).

    ``x`` is the one input array, or a feed of named inputs (passed to ``model`` positionally in
    the session's input order). The two are interleaved in rounds so machine noise hits both alike.
    """
    model = model.eval()
    names = [i.name for i in session.get_inputs()]
    feed = x if isinstance(x, dict) else {names[0]: x}
    tensors = [torch.from_numpy(feed[n]) for n in names]

    def eager():
        with torch.inference_mode():
            model(*tensors)

    def onnx():
        session.run(None, feed)

    eager_ms, ort_ms = [], []
    rounds = 3
    for _ in range(rounds):
        eager_ms.append(median_ms(eager, max(iters // rounds, 1), warmup))
        ort_ms.append(median_ms(onnx, max(iters // rounds, 1), warmup))
    return LatencyResult(len(tensors[0]), statistics.median(eager_ms), statistics.median(ort_ms))
