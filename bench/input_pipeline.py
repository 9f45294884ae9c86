"""The input pipeline without a model: the data pass against processes, batches against loader workers.

On a generated folder of JPEGs (10 classes, 256-400 px a side, as ``bench/gpu_train.py``), at 224 px:

- the data pass (streamed hash + decode of every file, writing the decoded cache) with 1, 2, 4, ...
  processes up to the cores, each on a cold cache folder;
- batches of 128 per second from ``image_loader`` against worker count, decoding JPEGs per batch
  (``data.cache=off``) and reading the decoded cache (``pread``), over one epoch after a warm-up batch.

    .venv/bin/python bench/input_pipeline.py [--images 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gpu_train import write_jpeg_folder  # noqa: E402

from edgetune.trainers.data.images import cpu_cores, load_image_data  # noqa: E402
from edgetune.trainers.data.sampling import EpochBatches  # noqa: E402
from edgetune.trainers.data.tensors import image_loader  # noqa: E402


def images_per_s(train, workers: int, batch: int = 128) -> float:
    loader = image_loader(train, EpochBatches(len(train), batch), workers, pin_memory=False)
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for x, _ in it:
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    cores = cpu_cores()
    tmp = Path(tempfile.mkdtemp(prefix="edgetune-input-bench-"))
    folder = write_jpeg_folder(tmp / "jpegs", args.images)
    print(f"# {args.images} JPEGs (256-400 px) -> {args.size} px, {cores} cores")
    counts = sorted({1, *[c for c in (2, 4, 8, 16, 32) if c <= cores], cores})
    print("\n| processes | data pass s | files/s |\n| --- | --- | --- |")
    for k in counts:
        t0 = time.perf_counter()
        load_image_data(str(folder), None, args.size, 0.2, False, 0, cache="disk", workers=k,
                        cache_root=tmp / f"cache-{k}")
        s = time.perf_counter() - t0
        print(f"| {k} | {s:.1f} | {args.images / s:,.0f} |", flush=True)
    cached, _, _ = load_image_data(str(folder), None, args.size, 0.2, False, 0, cache="disk",
                                   cache_root=tmp / f"cache-{counts[-1]}")
    decoded, _, _ = load_image_data(str(folder), None, args.size, 0.2, False, 0, cache="off",
                                    cache_root=tmp / f"cache-{counts[-1]}")
    print("\n| loader workers | decode per batch, images/s | decoded cache, images/s |\n| --- | --- | --- |")
    for w in sorted({0, *counts}):
        print(f"| {w} | {images_per_s(decoded, w):,.0f} | {images_per_s(cached, w):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
