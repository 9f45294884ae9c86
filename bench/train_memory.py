"""Peak memory of training against the dataset's size (the goal: flat; the model plus < 2 GB on CPU).

Generates folders of small JPEGs (10 classes, 48-80 px a side) of each ``--images`` count, then runs
``edgetune train image`` on each in its own process (resnet18, random init, 32 px, batch 256, one
epoch, CPU, the default decoded cache) and reads that process's peak RSS from the kernel
(``RUSAGE_CHILDREN``: the largest of the trainer and the pool processes of its data pass; the loader
needs no workers on CPU). Side by side, one run:

    .venv/bin/python bench/train_memory.py [--images 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gpu_train import write_jpeg_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb(data: Path, out: Path, cache: Path) -> tuple[float, float]:
    """Run one training process to the end; (its peak RSS in MB, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "edgetune.cli", "train", "image", "--data", str(data), "--out", str(out),
                    "--model", "resnet18", "--weights", "random", "--image-size", "32", "--epochs", "1",
                    "--batch-size", "256", "--device", "cpu", "--set", "checkpoint_every=0"],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "EDGETUNE_CACHE_DIR": str(cache)})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("this run's peak did not exceed an earlier one; run each size in its own process")
    return peak / 1024, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-mem-") as tmp:
        for n in sorted(args.images):  # ascending: RUSAGE_CHILDREN keeps the largest peak so far
            t0 = time.monotonic()
            data = write_jpeg_folder(Path(tmp) / f"d{n}", n, sides=(48, 80))
            written = time.monotonic() - t0
            peak, seconds = peak_rss_mb(data, Path(tmp) / f"run{n}", Path(tmp) / f"cache{n}")
            decoded = n * 32 * 32 * 3 / 2**20
            rows.append((n, written, seconds, peak, decoded))
            print(f"{n:>8,} images: written in {written:.0f} s; trained (data pass + 1 epoch) in {seconds:.0f} s; "
                  f"trainer peak RSS {peak:,.0f} MB (decoded pixels at 32 px: {decoded:,.0f} MB)", flush=True)
    (n0, _, _, p0, _), (n1, _, _, p1, d1) = rows[0], rows[-1]
    print(f"\npeak RSS {p1:,.0f} MB at {n1:,} images vs {p0:,.0f} MB at {n0:,}: {p1 / p0:.2f}x for "
          f"{n1 / n0:.0f}x the images (+{p1 - p0:,.0f} MB; holding the pixels would add {d1:,.0f} MB)")


if __name__ == "__main__":
    main()
