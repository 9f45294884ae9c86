import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from edgetune.progress import silent
from edgetune.trainers.config import OptimConfig
from edgetune.trainers.loop import Normalizer, build_scheduler, image_forward, resolve_device, train_one_epoch


def _setup():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 1, 1), dtype=torch.uint8)
    y = torch.randint(0, 2, (8,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    return x, y, model, Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_gradient_accumulation_averages_each_group_including_a_short_last_one():
    x, y, model, norm = _setup()
    reference = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=2)  # 4 batches, groups of 3 + 1
    setup = resolve_device("cpu")
    forward = image_forward(model, norm, setup)

    def compute_loss(batch, share=None):
        logits, labels = forward(batch)
        return nn.functional.cross_entropy(logits, labels), len(labels)

    train_one_epoch(model, loader, opt, sched, compute_loss, setup, 3, 1, 1, silent)

    # The same two updates by hand: mean loss over batches 0-2, then batch 3 alone.
    ref = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        for p, r in zip(ref.parameters(), reference):
            p.copy_(r)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=1.0)
    for group in ([0, 1, 2], [3]):
        ref_opt.zero_grad()
        loss = sum(nn.functional.cross_entropy(ref(norm(x[2 * b:2 * b + 2])), y[2 * b:2 * b + 2]) for b in group)
        (loss / len(group)).backward()
        ref_opt.step()
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r)


def test_warmup_then_cosine_to_zero():
    cfg = OptimConfig(lr=1.0, weight_decay=0.0, epochs=4, warmup_epochs=1.0)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == sorted(lrs[:5]) and lrs[0] < 0.5  # linear warmup over the first epoch
    assert max(lrs) == lrs[5] == 1.0  # peak when warmup ends
    assert lrs[5:] == sorted(lrs[5:], reverse=True)  # cosine decay towards zero over the 15 steps left
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))


def test_the_eta_covers_the_whole_job_not_just_the_epoch(monkeypatch):
    x, y, model, norm = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=2)  # 4 steps
    setup = resolve_device("cpu")
    forward = image_forward(model, norm, setup)
    clock = iter(range(100))  # one "second" per time.monotonic() call: start, then one per step
    monkeypatch.setattr("edgetune.trainers.loop.time.monotonic", lambda: float(next(clock)))
    events = []

    def compute_loss(batch, share=None):
        logits, labels = forward(batch)
        return nn.functional.cross_entropy(logits, labels), len(labels)

    # Epoch 2 of 5, evaluations measured at 10 s: 1 s per step.
    train_one_epoch(model, loader, opt, sched, compute_loss, setup, 1, 2, 5, events.append, eval_s=10.0, log_every=1)
    etas = [e.eta_s for e in events]
    # After step 1: 3 steps + this epoch's evaluation + 3 more epochs of (4 steps + evaluation).
    assert etas[0] == pytest.approx(3 + 10 + 3 * (4 + 10))
    assert etas[-1] == pytest.approx(10 + 3 * (4 + 10))  # the epoch's training is done, not the job
