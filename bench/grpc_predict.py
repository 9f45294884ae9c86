"""Predict over gRPC vs in-process ONNX Runtime, side by side in one run.

A real server process (``edgetune serve``) fine-tunes EfficientNet-Lite0 for one epoch on the
digits at 64px and exports it; then the same PNG bytes are classified (decode, preprocess, ORT,
softmax, top-k) in-process and over gRPC on loopback. Reports batch-1 latency (p50, p99) and
throughput with 1 and 8 concurrent clients (threads, one channel each).

    .venv/bin/python bench/grpc_predict.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgetune.trainers.data.digits import write_digits_imagefolder
from edgetune.runtime.image import ImagePredictor
from edgetune.server.transport.client import EdgetuneClient


def start_server(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``edgetune serve`` on a free loopback port (``extra``: more serve flags): (process, host:port)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "serve", "--port", "0", "--data-dir",
                             str(data_dir), *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        m = re.search(r"serving on ([\d.]+:\d+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("server did not start")


def trained_export(client: EdgetuneClient, tmp: Path):
    """EfficientNet-Lite0 tuned one epoch on the digits at 64 px through the server: (the export,
    a digit's PNG bytes)."""
    digits = write_digits_imagefolder(tmp / "digits")
    job = client.create_job(client.upload_dataset(digits).id, "efficientnet_lite0", "full", "catalog", epochs=1,
                            image_size=64)
    for _ in client.watch(job.id):
        pass
    return client.export(job.id), next((digits / "3").glob("*.png")).read_bytes()


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def in_process_predict(predictor: ImagePredictor, image: bytes) -> list:
    return predictor.predict_encoded([image], top_k=1)[0].top


def latencies(fn, n: int, warm: int = 20) -> list[float]:
    """Milliseconds of each of ``n`` calls, after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def throughput(make_fn, clients: int, per_client: int) -> float:
    fns = [make_fn() for _ in range(clients)]
    for fn in fns:
        fn()
    barrier = threading.Barrier(clients + 1)

    def work(fn):
        barrier.wait()
        for _ in range(per_client):
            fn()

    threads = [threading.Thread(target=work, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, target = start_server(tmp / "server")
        try:
            client = EdgetuneClient(target)
            client.wait_ready()
            exp, image = trained_export(client, tmp)
            bundle = client.download(exp.id, tmp / "dl")
            predictor = ImagePredictor(bundle, device="cpu")

            local = latencies(lambda: in_process_predict(predictor, image), args.requests)
            remote = latencies(lambda: client.predict(exp.id, [image], top_k=1), args.requests)
            print(f"# efficientnet_lite0 at 64px, batch 1, CPU, {os.cpu_count()} cores; server in its own process")
            print(f"{'':<22}{'p50 ms':>8}{'p99 ms':>8}")
            print(f"{'in-process ORT':<22}{percentile(local, 50):>8.3f}{percentile(local, 99):>8.3f}")
            print(f"{'Predict over gRPC':<22}{percentile(remote, 50):>8.3f}{percentile(remote, 99):>8.3f}")
            print(f"gRPC overhead at p50: {percentile(remote, 50) - percentile(local, 50):.3f} ms")

            per = max(20, args.requests // 4)
            for n in (1, 8):
                tl = throughput(lambda: (lambda: in_process_predict(predictor, image)), n, per)
                cpu0 = time.process_time()
                tr = throughput(lambda: (lambda c=EdgetuneClient(target): c.predict(exp.id, [image], top_k=1)), n, per)
                client_cpu_ms = (time.process_time() - cpu0) / (n * per + n) * 1000
                print(f"{n} client(s): in-process {tl:.0f} req/s, gRPC {tr:.0f} req/s ({tr / tl:.0%} of in-process); "
                      f"the clients themselves used {client_cpu_ms:.2f} ms CPU per request on the same cores")
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
