"""The epoch loop every recipe shares: train, evaluate, keep the best, save resume state.

A recipe (``train_image``, ``train_text``) builds its data, model and closures, then calls
``fit``. Resume state (``state/last.pt``) holds everything to continue exactly after the last
finished epoch: model, optimizer, schedule, every RNG, the loader's generator and the history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from edgetune.errors import InvalidArgument
from edgetune.progress import EpochEnd, LogLine, ProgressSink

from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers.config import TrainConfig, config_from_dict
from edgetune.trainers.loop import DeviceSetup, resolve_device, train_one_epoch
from edgetune.trainers.run import RunFiles


@dataclass
class FitState:
    """Where training stands after ``epoch`` finished epochs."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0
    stale: int = 0  # epochs since the metric last improved
    before: dict | None = None  # metrics of the model being re-tuned, before any training


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python and torch; returns the generator that orders the training data."""
    random.seed(seed)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def begin_run(cfg: TrainConfig, out_dir: str | Path, resume: bool, progress: ProgressSink
              ) -> tuple[RunFiles, torch.Generator, DeviceSetup]:
    """The first steps of every recipe: refuse to overwrite a run, seed, pick the device."""
    files = RunFiles(Path(out_dir))
    if not resume and (files.state.exists() or files.weights.exists()):
        raise InvalidArgument("out", f"{out_dir} already holds a run; pick a new --out or --resume it")
    generator = seed_everything(cfg.seed)
    setup = resolve_device(cfg.device)
    progress(LogLine(f"device: {setup.describe()}"))
    return files, generator, setup


def _better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


def restore(files: RunFiles, cfg: TrainConfig, model: nn.Module, opt, sched, generator: torch.Generator,
            progress: ProgressSink) -> FitState:
    """Load ``state/last.pt`` into the training objects; the config must equal the run's."""
    if not files.config.is_file() or not files.state.is_file():
        raise InvalidArgument("resume", f"{files.root} has no config.yaml and state/last.pt to resume from")
    if config_from_dict(yaml.safe_load(files.config.read_text())) != cfg:
        raise InvalidArgument("resume", "config differs from the run being resumed")
    state = ckpt.load_training_state(files.state)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng"):
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    generator.set_state(state["loader_rng"])
    random.setstate(_to_tuple(state["python_rng"]))
    progress(LogLine(f"resuming after epoch {state['epoch']}"))
    return FitState(state["epoch"], state["history"], state["best_metric"], state["best_epoch"], state["stale"],
                    state.get("before"))


def fit(cfg: TrainConfig, files: RunFiles, state: FitState, model: nn.Module, opt, sched,
        generator: torch.Generator, loader, compute_loss: Callable, setup: DeviceSetup,
        evaluate: Callable[[], dict], save_best: Callable[[int, dict], None], progress: ProgressSink,
        train_mode: Callable[[], None] | None = None) -> FitState:
    """Run the remaining epochs of ``cfg``.

    Args:
        loader, compute_loss: the training batches and batch -> (mean loss, items) (``train_one_epoch``).
        evaluate: -> validation metrics, including ``cfg.optim.metric``.
        save_best: (epoch, metrics) -> writes the best checkpoint.
        train_mode: puts the model in training mode (default ``model.train()``).
    """
    epochs, metric, patience = cfg.optim.epochs, cfg.optim.metric, cfg.optim.early_stopping_patience
    for epoch in range(state.epoch + 1, epochs + 1):
        if patience and state.stale >= patience:
            break
        t0 = time.monotonic()
        (train_mode or model.train)()
        train_loss = train_one_epoch(model, loader, opt, sched, compute_loss, setup, cfg.optim.grad_accum,
                                     epoch, epochs, progress)
        train_seconds = time.monotonic() - t0
        metrics = {"train_loss": train_loss, **evaluate()}
        seconds = time.monotonic() - t0
        state.history.append({"epoch": epoch, **metrics, "seconds": seconds, "train_seconds": train_seconds,
                              "lr": sched.get_last_lr()[0]})
        improved = _better(metric, metrics[metric], state.best_metric)
        if improved:
            state.best_metric, state.best_epoch, state.stale = metrics[metric], epoch, 0
            save_best(epoch, metrics)
        else:
            state.stale += 1
        state.epoch = epoch
        ckpt.save_training_state(files.state, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loader_rng": generator.get_state(), "python_rng": random.getstate(), **asdict(state)})
        progress(EpochEnd(epoch, epochs, metrics, seconds, improved))
    if patience and state.stale >= patience:
        progress(LogLine(f"early stopping: no {metric} improvement for {state.stale} epoch(s)"))
    return state


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
