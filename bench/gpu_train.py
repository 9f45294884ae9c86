"""GPU training throughput, side by side in one run: the ceiling, a timm-style loader, and edgetune.

For each architecture at 224 px, bf16 autocast, channels_last, fused AdamW, on a generated folder of
JPEGs (10 classes of varied sizes, 256-400 px a side):

- ceiling: the training step alone on uint8 batches already on the GPU (no input pipeline);
- timm-style: torchvision ImageFolder, JPEG decode + RandomResizedCrop + flip in DataLoader workers
  (every core but one), pinned memory, the same step;
- edgetune: ``train_image`` with its default augmentation (the training pass of epochs 2+, from
  the run's history), reading the decoded cache (``data.cache=auto``), and with ``data.cache=off``
  (decoding JPEGs in loader workers every epoch) for the first architecture.

Images/s are training images over training seconds. Without CUDA it says so and exits 0.

On a node with several GPUs it then measures scaling for the first architecture: ``edgetune train
--gpus K`` (DDP through torchrun) for K = 1, 2, 4, ... up to the GPUs, with the per-GPU batch fixed
(global batch K x batch), as images/s and as efficiency against K times one GPU.

    python bench/gpu_train.py [--images 6400] [--archs resnet50,efficientnet_lite0,vit_base_patch16_224]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

BATCH = {"vit_base_patch16_224": 64}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _write_image(args) -> None:
    path, seed, sides = args
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)  # smooth, photo-like content
    from PIL import Image

    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    img.save(path, quality=90)


def write_jpeg_folder(root: Path, n: int, classes: int = 10, sides: tuple[int, int] = (256, 400)) -> Path:
    """``n`` JPEGs of smooth random content, ``sides`` px a side, in ``classes`` folders."""
    jobs = []
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        jobs.append((d / f"{i:06d}.jpg", i, sides))
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_image, jobs, chunksize=64)
    return root


def _model(arch: str):
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=10).cuda()
    return model.to(memory_format=torch.channels_last)


def _step_fn(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    mean = torch.tensor(MEAN, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(STD, device="cuda").view(1, 3, 1, 1)

    def step(x, y):
        x = ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def ceiling(arch: str, batch: int, steps: int = 40, warmup: int = 15) -> float:
    torch.backends.cudnn.benchmark = True
    model = _model(arch)
    step = _step_fn(model)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    for _ in range(warmup):
        step(x, y)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def timm_style(arch: str, batch: int, folder: Path, workers: int, warmup: int = 10) -> float:
    from torchvision import datasets, transforms

    torch.backends.cudnn.benchmark = True
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.PILToTensor()])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(folder), tf), batch_size=batch, shuffle=True,
                                         num_workers=workers, pin_memory=True, drop_last=True,
                                         persistent_workers=True, prefetch_factor=4)
    model = _model(arch)
    step = _step_fn(model)
    seen, t0 = 0, None
    for epoch in range(2):
        for i, (x, y) in enumerate(loader):
            if epoch == 0 and i == warmup:
                torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            step(x.cuda(non_blocking=True), y.cuda(non_blocking=True))
            seen += len(y)
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def edgetune(arch: str, batch: int, folder: Path, out: Path, cache: str, epochs: int = 3) -> tuple[float, float]:
    """(images/s of the training pass over epochs 2+, seconds from the start to the first step)."""
    from edgetune.progress import LogLine, StepProgress
    from edgetune.trainers.config import load_config
    from edgetune.trainers.recipes.image_classification import train_image

    cfg = load_config(overrides={"data.path": str(folder), "data.image_size": 224, "model.arch": arch,
                                 "model.weights": "random", "optim.batch_size": batch, "optim.epochs": epochs,
                                 "device": "cuda", "data.cache": cache, "checkpoint_every": 0})
    t0, first = time.monotonic(), []

    def sink(e):
        if isinstance(e, StepProgress) and not first:
            first.append(time.monotonic() - t0)
        elif isinstance(e, LogLine) and e.message.startswith("data"):
            print(f"    {e.message.splitlines()[0]}", flush=True)

    result = train_image(cfg, out, sink)
    hist = result.report["history"][1:]
    n = result.report["data"]["train_count"]
    return n * len(hist) / sum(h["train_seconds"] for h in hist), first[0]


def edgetune_ddp(arch: str, batch: int, gpus: int, folder: Path, out: Path, epochs: int = 3) -> float:
    """Images/s of the training pass over epochs 2+ of ``edgetune train --gpus K`` (its own processes)."""
    import json
    import subprocess

    subprocess.run([sys.executable, "-m", "edgetune.cli", "train", "image", "--data", str(folder), "--out", str(out),
                    "--model", arch, "--weights", "random", "--image-size", "224", "--epochs", str(epochs),
                    "--batch-size", str(batch * gpus), "--device", "cuda", "--gpus", str(gpus),
                    "--set", "checkpoint_every=0"], check=True, capture_output=True)
    report = json.loads((out / "report.json").read_text())
    hist = report["history"][1:]
    return report["data"]["train_count"] * len(hist) / sum(h["train_seconds"] for h in hist)


def scaling(arch: str, batch: int, folder: Path, tmp: Path) -> None:
    counts = [k for k in (1, 2, 4, 8, 16) if k <= torch.cuda.device_count()]
    print(f"\nscaling, {arch}, batch {batch} per GPU (edgetune train --gpus K):", flush=True)
    print("| GPUs | images/s | efficiency |\n| --- | --- | --- |")
    one = None
    for k in counts:
        try:
            ips = edgetune_ddp(arch, batch, k, folder, tmp / f"ddp-{arch}-{k}")
        except Exception as e:  # noqa: BLE001
            print(f"| {k} | FAILED {type(e).__name__}: {e} | - |", flush=True)
            continue
        one = one or (ips if k == 1 else None)
        print(f"| {k} | {ips:,.0f} | {f'{100 * ips / (k * one):.0f}%' if one else '-'} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6400)
    ap.add_argument("--archs", default="resnet50,efficientnet_lite0,vit_base_patch16_224")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs one (bench/train_epoch.py measures the CPU path)")
        return 0
    name = torch.cuda.get_device_name()
    tmp = Path(tempfile.mkdtemp(prefix="edgetune-gpu-bench-"))
    os.environ.setdefault("EDGETUNE_CACHE_DIR", str(tmp / "cache"))
    t = time.monotonic()
    folder = write_jpeg_folder(tmp / "jpegs", args.images)
    print(f"# {name}, torch {torch.__version__}, {os.cpu_count()} cores; {args.images} JPEGs written in "
          f"{time.monotonic() - t:.1f}s; 224 px, bf16 autocast, channels_last, fused AdamW; "
          f"timm-style loader: {args.workers} workers", flush=True)
    rows = []
    for k, arch in enumerate(args.archs.split(",")):
        batch = BATCH.get(arch, 128)
        print(f"{arch} (batch {batch})", flush=True)
        row = {"arch": arch, "batch": batch}
        for label, fn in (("ceiling", lambda: ceiling(arch, batch)),
                          ("timm-style", lambda: timm_style(arch, batch, folder, args.workers)),
                          ("edgetune", lambda: edgetune(arch, batch, folder, tmp / f"run-{arch}", "auto")),
                          ("edgetune, cache off", (lambda: edgetune(arch, batch, folder, tmp / f"run-{arch}-off",
                                                                    "off")) if k == 0 else None)):
            if fn is None:
                continue
            try:
                value = fn()
            except Exception as e:  # noqa: BLE001 - one failing pipeline must not hide the others' figures
                print(f"  {label}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            if isinstance(value, tuple):
                value, first = value
                print(f"  {label}: {value:,.0f} images/s (step 10 reached {first:.1f}s after the start, data pass included)", flush=True)
            else:
                print(f"  {label}: {value:,.0f} images/s", flush=True)
            row[label] = value
            torch.cuda.empty_cache()
        rows.append(row)
    print("\n| arch | batch | ceiling | timm-style | edgetune | edgetune / ceiling | edgetune, cache off |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c, e = r.get("ceiling"), r.get("edgetune")
        ratio = f"{100 * e / c:.0f}%" if c and e else "-"
        cells = [f"{r[k]:,.0f}" if k in r else "-" for k in ("ceiling", "timm-style", "edgetune")]
        off = f"{r['edgetune, cache off']:,.0f}" if "edgetune, cache off" in r else "-"
        print(f"| {r['arch']} | {r['batch']} | {' | '.join(cells)} | {ratio} | {off} |")
    print(f"\n(images/s; {name})")
    if torch.cuda.device_count() > 1:
        first = args.archs.split(",")[0]
        scaling(first, BATCH.get(first, 128), folder, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
