"""The shared pieces of a training recipe: device, optimizer, schedule, one epoch, evaluation."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from edgetune.errors import InvalidArgument
from edgetune.progress import ProgressSink, StepProgress

from edgetune.trainers.config import OptimConfig
from edgetune.trainers.data.sampling import Share
from edgetune.trainers.distributed import Dist
from edgetune.trainers.metrics import confusion_matrix, summarize


@dataclass(frozen=True)
class DeviceSetup:
    """Where and how tensors are computed. CUDA: bf16 autocast and channels_last; CPU: fp32."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> str:
        amp = f"{self.autocast_dtype}".replace("torch.", "") if self.autocast_dtype else "fp32"
        return f"{self.device.type} ({amp}{', channels_last' if self.channels_last else ''})"


def resolve_device(name: str, index: int | None = None) -> DeviceSetup:
    """``auto``: CUDA when torch sees it, else the CPU. ``index``: which of the visible GPUs (a DDP
    process's local rank)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InvalidArgument("device", "cuda requested but torch sees no CUDA device")
        if index is not None and index >= torch.cuda.device_count():
            raise InvalidArgument("gpus", f"process {index} has no GPU: torch sees {torch.cuda.device_count()}")
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)  # native bf16 only (Ampere+)
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: pick the fastest convolution once
        return DeviceSetup(torch.device("cuda", index) if index is not None else torch.device("cuda"),
                           torch.bfloat16 if bf16 else None, True)
    return DeviceSetup(torch.device("cpu"), None, False)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over trainable parameters; no weight decay on biases and norm weights."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    # Fused AdamW (one kernel for all parameters) where every trainable parameter is on CUDA.
    fused = bool(decay or no_decay) and all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    """Linear warmup for ``warmup_epochs``, then cosine to zero (or constant), per optimizer step."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Normalizer(nn.Module):
    """uint8 NCHW -> normalized float, on the device; the same arithmetic as edgetune.runtime.imaging."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor, augment=None) -> torch.Tensor:
        x = x.float() / 255.0
        if augment is not None:
            x = augment(x)
        return (x - self.mean) / self.std


Batch = tuple[torch.Tensor, ...]  # what the loaders yield: (pixels, labels), (ids, mask, labels), ...
Forward = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]  # batch -> (logits, labels) on the device


def image_forward(model: nn.Module, norm: Normalizer, setup: DeviceSetup, augment=None) -> Forward:
    """uint8 image batches -> (logits, labels): scaled, augmented (training) and normalized on the
    device, channels_last on CUDA. ``share`` (a training step's place in its global batch) goes to
    the augmentation."""

    def forward(batch, share: Share | None = None):
        x, y = batch
        x = norm(x.to(setup.device, non_blocking=True), augment and (lambda t: augment(t, share)))
        if setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x), y.to(setup.device, non_blocking=True)

    return forward


class LossWindow:
    """The mean training loss over the steps since the last progress event, read without draining
    the GPU: on CUDA each read starts an asynchronous copy and returns the previous window's mean
    (one window late; the first read of an epoch and the last wait, as the epoch's end does anyway)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.sum, self.n = torch.zeros((), device=device), 0
        self.pending: tuple[torch.Tensor, torch.cuda.Event] | None = None

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss.detach().float()
        self.n += 1

    def read(self, wait: bool = False) -> float:
        mean, self.sum, self.n = self.sum / max(self.n, 1), torch.zeros_like(self.sum), 0
        if not self.cuda or wait or self.pending is None:
            self.pending = None
            return float(mean)
        host = torch.empty((), pin_memory=True)
        host.copy_(mean, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        (prev, prev_event), self.pending = self.pending, (host, event)
        prev_event.synchronize()  # recorded a window ago: long done
        return float(prev)


@dataclass
class EpochPosition:
    """How far an epoch got: batches done, and the summed training loss over ``count`` items.
    Saved in a mid-epoch checkpoint; a resumed epoch starts from it."""

    step: int = 0
    loss_sum: float = 0.0
    count: int = 0


def train_one_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, sched,
                    compute_loss: Callable[[Batch, Share | None], tuple[torch.Tensor, int]], setup: DeviceSetup,
                    grad_accum: int, epoch: int, epochs: int, progress: ProgressSink, eval_s: float = 0.0,
                    start: EpochPosition | None = None, log_every: int = 10,
                    after_step: Callable[[EpochPosition], None] | None = None, dist: Dist | None = None,
                    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None) -> float:
    """One pass over ``loader`` (from ``start``); returns the mean training loss.

    The device is never waited on per step: progress events come every ``log_every`` steps (and on
    the last) with the loss read through ``LossWindow``, and the epoch's mean is read once at the end.

    Under DDP (``dist``) each process's loss is weighted by its share of the global batch's items
    (rows, or response tokens), so the averaged gradients equal one process's on the whole batch;
    ``start`` and the returned mean then count every process's items.

    Args:
        compute_loss: (batch, its ``Share`` of the global batch, or None) -> (mean loss over the
            batch, how many items it averages).
        eval_s: seconds an evaluation takes (measured on earlier epochs; 0 before the first), so
            the progress ETA covers the whole job: this epoch, its evaluation, and the epochs left.
        start: where a resumed epoch stands (``loader`` then yields only the batches after it).
        after_step: called after every optimizer step with the position (checkpoints, stop requests).
        no_sync: the DDP module's ``no_sync``: gradients of accumulation steps are reduced only once.
    """
    dist = dist or Dist()
    sampler = loader.batch_sampler
    steps = len(sampler) if sampler is not None else len(loader)
    shares = getattr(sampler, "share", None)
    if dist.enabled and shares is None:
        raise ValueError("distributed training needs EpochBatches (each process's share of a global batch)")
    start = start or EpochPosition()
    total = torch.tensor(start.loss_sum, dtype=torch.float64, device=setup.device)
    count = start.count
    t0 = time.monotonic()
    opt.zero_grad(set_to_none=True)
    last_group = steps - steps % grad_accum if steps % grad_accum else steps - grad_accum
    window = LossWindow(setup.device)
    for i, batch in enumerate(loader, start=start.step):
        share = shares(i) if shares is not None else None
        boundary = (i + 1) % grad_accum == 0 or i + 1 == steps
        # The last group of an epoch may be shorter: average over the batches it really has.
        group = grad_accum if i < last_group else steps - last_group
        with (no_sync() if no_sync is not None and not boundary else contextlib.nullcontext()):
            with setup.autocast():
                loss, n = compute_loss(batch, share)
            weight = 1.0
            if dist.enabled:
                n = n if share.size else 0  # a padded share: joins the all-reduce, adds nothing
                weight = n * dist.world / dist.sum_int(n)  # DDP averages over processes
            (loss * (weight / group)).backward()
        total += loss.detach().double() * n
        count += n
        window.add(loss)
        if boundary:
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step(EpochPosition(i + 1, total, count))
        if progress is not None and ((i + 1) % log_every == 0 or i + 1 == steps):
            pace = (time.monotonic() - t0) / (i + 1 - start.step)
            eta = pace * (steps - i - 1) + eval_s + (epochs - epoch) * (pace * steps + eval_s)
            progress(StepProgress(epoch, epochs, i + 1, steps, window.read(wait=i + 1 == steps), sched.get_last_lr()[0],
                                  eta))
    return dist.sum_float(float(total.item())) / max(dist.sum_int(count), 1)


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, forward: Forward, setup: DeviceSetup
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and labels for every batch of ``loader`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in loader:
        with setup.autocast():
            out, y = forward(batch)
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def score(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[dict[str, float], np.ndarray]:
    """Validation loss (plain cross-entropy), accuracy and macro-F1 of float32 logits, and the confusion matrix."""
    loss = float(nn.functional.cross_entropy(logits, labels).item())
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), num_classes)
    s = summarize(cm)
    return {"val_loss": loss, "val_accuracy": s["accuracy"], "val_macro_f1": s["macro_f1"]}, cm


def evaluate(model: nn.Module, loader: DataLoader, forward: Forward, setup: DeviceSetup,
             num_classes: int) -> tuple[dict[str, float], np.ndarray]:
    """``score`` of the model's logits over ``loader``."""
    return score(*predict_logits(model, loader, forward, setup), num_classes)
