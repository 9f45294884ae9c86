"""Epoch time of the edgetune trainer vs a minimal plain PyTorch loop on the same data.

Same model (ImageNet EfficientNet-Lite0, full fine-tune), same decoded digits tensors, same batch
size, optimizer and loss; augmentation off in both so only the loop differs. The two alternate in
ABBA order (plain first in even rounds, edgetune first in odd ones) and the first epoch of each
run is dropped as warm-up.
The edgetune figure is the training pass of each epoch (``train_seconds``); its full epoch, which
adds validation and atomic checkpoint writes, is reported beside it against plain train + eval.

Layout: edgetune's batches are NCHW views of NHWC memory (channels_last, as the decoded cache
stores pixels), which oneDNN runs faster on CPU than contiguous NCHW. By default the plain loop gets
the same layout, so the ratio is the loop's own overhead; ``--plain-layout nchw`` gives the plain
loop the contiguous NCHW batches a ``TensorDataset`` collates by default.

    .venv/bin/python bench/train_epoch.py [--size 64] [--epochs 3] [--rounds 4] [--plain-layout nhwc|nchw]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from edgetune.trainers.data.digits import write_digits_imagefolder
from edgetune.trainers.models.image import create_model
from edgetune.trainers.models.image import load_base_weights
from edgetune.trainers.models.weights import resolve_weights
from edgetune.trainers.config import load_config
from edgetune.trainers.data.images import load_image_data
from edgetune.trainers.recipes.image_classification import train_image


def plain_loop(train, val, size: int, epochs: int, batch: int, lr: float, wd: float, seed: int,
               channels_last: bool = True):
    """The loop a PyTorch user would write: returns (train seconds, train+eval seconds) per epoch."""
    torch.manual_seed(seed)
    source = resolve_weights("efficientnet_lite0", "catalog")
    model = create_model("efficientnet_lite0", 10, size, source.create_kwargs)
    load_base_weights(model, source)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tx = torch.from_numpy(train.read(range(len(train)))).permute(0, 3, 1, 2)
    vx = torch.from_numpy(val.read(range(len(val)))).permute(0, 3, 1, 2)
    loader = DataLoader(TensorDataset(tx, torch.from_numpy(train.labels)), batch_size=batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    times = []
    for _ in range(epochs):
        t0 = time.monotonic()
        model.train()
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model((x.float() / 255 - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t_train = time.monotonic() - t0
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(vx), 128):
                model((vx[i:i + 128].float() / 255 - mean) / std)
        times.append((t_train, time.monotonic() - t0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--plain-layout", choices=["nhwc", "nchw"], default="nhwc")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits_imagefolder(Path(tmp) / "digits")
        cfg = load_config(overrides={"data.path": str(data), "data.image_size": args.size, "data.augment": False,
                                     "optim.epochs": args.epochs, "optim.batch_size": args.batch,
                                     "device": "cpu"})
        train, val, _ = load_image_data(str(data), None, args.size, cfg.data.val_fraction, False, cfg.seed)
        plain_train, plain_full, et_train, et_full = [], [], [], []

        def run_plain():
            times = plain_loop(train, val, args.size, args.epochs, args.batch, cfg.optim.lr,
                               cfg.optim.weight_decay, cfg.seed, args.plain_layout == "nhwc")[1:]
            plain_train.extend(t for t, _ in times)
            plain_full.extend(f for _, f in times)
            return [round(t, 2) for t, _ in times]

        def run_edgetune(r):
            hist = train_image(cfg, Path(tmp) / f"run{r}").report["history"][1:]
            et_train.extend(h["train_seconds"] for h in hist)
            et_full.extend(h["seconds"] for h in hist)
            return [round(h["train_seconds"], 2) for h in hist]

        # ABBA order: this VM's epoch times drift during a run, so each side goes first half the time.
        for r in range(args.rounds):
            if r % 2 == 0:
                p, e = run_plain(), run_edgetune(r)
            else:
                e, p = run_edgetune(r), run_plain()
            print(f"round {r + 1}: plain {p} edgetune {e}", flush=True)
    pt, et = statistics.median(plain_train), statistics.median(et_train)
    pf, ef = statistics.median(plain_full), statistics.median(et_full)
    print(f"# digits {len(train.labels)} train / {len(val.labels)} val images at {args.size}px, "
          f"efficientnet_lite0 full fine-tune, batch {args.batch}, {torch.get_num_threads()} threads, CPU; "
          f"plain loop batches {args.plain_layout.upper()} in memory")
    print(f"training pass:    plain {pt:.2f} s/epoch, edgetune {et:.2f} s/epoch, ratio {et / pt:.3f}x")
    print(f"epoch incl. eval: plain {pf:.2f} s/epoch, edgetune {ef:.2f} s/epoch, ratio {ef / pf:.3f}x "
          f"(edgetune also writes checkpoints)")


if __name__ == "__main__":
    main()
