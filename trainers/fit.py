"""The epoch loop every recipe shares: train, evaluate, keep the best, save resume state, report.

A recipe builds its data, model and closures into a ``Trainee`` and calls ``fit``; ``finish_run``
writes the final report. Resume state (``state/last.pt``, written atomically) holds everything to
continue exactly where it was saved: model, optimizer, schedule, every RNG (Python, numpy, torch,
CUDA, the data order's and the augmentation's generators) and the history, plus, mid-epoch, the
epoch's position (the data order's state at the epoch's start and the batches done). It is saved at
every epoch's end, every ``checkpoint_every`` optimizer steps, and at a stop request (SIGTERM), so a
run killed at any instant resumes from its last save and ends with the same weights, bit for bit on CPU.
Loader workers draw no random numbers (augmentation runs on the training device), so they hold no state.

Under DDP (``distributed``) every process runs the same recipe: the same data order and augmentation,
each on its share of every global batch; rank 0 alone writes files and progress, and the resume state
holds every process's RNGs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from edgetune.errors import InvalidArgument, WeightsError
from edgetune.progress import EpochEnd, LogLine, ProgressSink, TrainingStopped, silent, stop_requested

from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers import distributed
from edgetune.trainers.config import TrainConfig, read_saved_config
from edgetune.trainers.data.sampling import Share
from edgetune.trainers.distributed import Dist
from edgetune.trainers.loop import (Batch, DeviceSetup, EpochPosition, build_optimizer, build_scheduler,
                                    resolve_device, train_one_epoch)
from edgetune.trainers.report import plot_confusion, plot_curves
from edgetune.trainers.run import RunFiles, RunResult


@dataclass
class FitState:
    """Where training stands after ``epoch`` finished epochs."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0
    stale: int = 0  # epochs since the metric last improved
    before: dict | None = None  # metrics of the base model (or the run being re-tuned), before training
    position: dict | None = None  # mid-epoch: {"step", "loss_sum", "count", "epoch_rng"} of epoch + 1


@dataclass
class RunContext:
    """One run being trained: its config, folder, device, generators and progress sink.

    ``generator`` orders the training data; ``augment_generator`` draws augmentation parameters.
    """

    cfg: TrainConfig
    files: RunFiles
    setup: DeviceSetup
    generator: torch.Generator
    progress: ProgressSink
    resume: bool
    augment_generator: torch.Generator = field(default_factory=torch.Generator)
    dist: Dist = field(default_factory=Dist)

    def log(self, message: str, level: str = "info") -> None:
        self.progress(LogLine(message, level=level))


@dataclass
class Trainee:
    """What ``fit`` trains, and the recipe's steps it calls.

    Attributes:
        compute_loss: (batch, its share of the global batch or None) -> (mean loss over the batch,
            how many items it averages).
        evaluate: -> validation metrics, including ``cfg.optim.metric``.
        save_best: (epoch, metrics) -> writes the best checkpoint.
        train_mode: puts the model in training mode (default ``model.train()``).
        no_sync: the DDP module's ``no_sync`` (gradient accumulation reduces once per step).
    """

    model: nn.Module
    loader: DataLoader
    compute_loss: Callable[[Batch, Share | None], tuple[torch.Tensor, int]]
    evaluate: Callable[[], dict]
    save_best: Callable[[int, dict], None]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    train_mode: Callable[[], None] | None = None
    no_sync: Callable | None = None


def make_trainee(run: RunContext, model: nn.Module, loader: DataLoader, compute_loss, evaluate, save_best,
                 train_mode: Callable[[], None] | None = None, trains: nn.Module | None = None) -> Trainee:
    """A ``Trainee`` with the config's optimizer and schedule over ``model``'s trainable parameters.
    ``trains`` is the module the training steps call (``training_module``)."""
    opt = build_optimizer(model, run.cfg.optim)
    sched = build_scheduler(opt, run.cfg.optim, -(-len(loader) // run.cfg.optim.grad_accum))
    no_sync = getattr(getattr(trains, "_orig_mod", trains), "no_sync", None)
    return Trainee(model, loader, compute_loss, evaluate, save_best, opt, sched, train_mode, no_sync)


def seed_everything(seed: int, rank: int = 0) -> tuple[torch.Generator, torch.Generator]:
    """Seed Python, numpy and torch (``seed + rank``: processes of one job draw different dropout);
    returns the generators of the data order and of augmentation, the same on every process."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)


def training_module(run: RunContext, model: nn.Module) -> nn.Module:
    """What the training steps call: ``model``, wrapped in DDP under several processes, and
    ``torch.compile``d when the config asks. Weights, checkpoints and evaluation keep using
    ``model``: they all share its parameters."""
    trains = distributed.wrap(model, run.dist, run.setup.device)
    if not run.cfg.compile:
        return trains
    run.log("compiling the training forward (torch.compile; the first steps wait for it)")
    return torch.compile(trains)


def begin_run(cfg: TrainConfig, out_dir: str | Path, resume: bool, progress: ProgressSink) -> RunContext:
    """The first steps of every recipe: join the job's processes (under a launcher such as
    torchrun), refuse to overwrite a run, seed, pick the device."""
    files = RunFiles(Path(out_dir))
    dist = distributed.from_env()
    setup = resolve_device(cfg.device, dist.local_rank if dist.enabled else None)
    dist = distributed.start(dist, setup.device.type == "cuda")
    if not dist.is_main:
        progress = silent
    if cfg.optim.batch_size < dist.world:
        raise InvalidArgument("optim.batch_size", f"{cfg.optim.batch_size} is less than the job's {dist.world} "
                                                  f"processes: each needs a share of every batch")
    if not resume and (files.state.exists() or files.weights.exists()):
        raise InvalidArgument("out", f"{out_dir} already holds a run; pick a new --out or --resume it")
    if resume and dist.is_main:  # a process killed while writing its state leaves the temp file behind
        for tmp in files.state.parent.glob(f".{files.state.name}.*"):
            tmp.unlink(missing_ok=True)
    dist.barrier()  # every process checked the folder before rank 0 writes to it
    generator, augment_generator = seed_everything(cfg.seed, dist.rank)
    progress(LogLine(f"device: {setup.describe()}"
                     + (f" x {dist.world} processes (DDP)" if dist.enabled else "")))
    return RunContext(cfg, files, setup, generator, progress, resume, augment_generator, dist)


def _better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


def restore(run: RunContext, trainee: Trainee) -> FitState:
    """Load ``state/last.pt`` into the training objects; the config must equal the run's."""
    files = run.files
    if not files.config.is_file() or not files.state.is_file():
        raise InvalidArgument("resume", f"{files.root} has no config.yaml and state/last.pt to resume from")
    if read_saved_config(files.config) != run.cfg:
        raise InvalidArgument("resume", "config differs from the run being resumed")
    state = ckpt.load_training_state(files.state)
    try:
        trainee.model.load_state_dict(state["model"])
        trainee.opt.load_state_dict(state["optimizer"])
        trainee.sched.load_state_dict(state["scheduler"])
        run.generator.set_state(state["loader_rng"])
        if "augment_rng" in state:
            run.augment_generator.set_state(state["augment_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise WeightsError(str(files.state), f"does not fit this run: {ckpt.one_line(e)}") from None
    saved = state.get("process_rngs") or [state]  # one per process (runs before DDP saved one)
    if len(saved) == run.dist.world:
        _set_process_rngs(saved[run.dist.rank])
    else:  # another process count: other dropout draws (and a tiny last batch may fold differently)
        run.log(f"resuming with {run.dist.world} processes where {len(saved)} saved their state: the run "
                f"continues, but not exactly as an uninterrupted one would", level="warning")
        if run.dist.is_main:
            _set_process_rngs(saved[0])
    position = state.get("position")
    where = f"at step {position['step']} of epoch {state['epoch'] + 1}" if position else f"after epoch {state['epoch']}"
    run.log(f"resuming {where}")
    if position is not None and not run.dist.is_main:  # the epoch's loss so far counts once, on rank 0
        position = {**position, "loss_sum": 0.0, "count": 0}
    return FitState(state["epoch"], state["history"], state["best_metric"], state["best_epoch"], state["stale"],
                    state.get("before"), position)


def _process_rngs() -> dict:
    """This process's RNG states: Python, numpy, torch and CUDA."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(), "numpy_rng": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss)}


def _set_process_rngs(saved: dict) -> None:
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    random.setstate(_to_tuple(saved["python_rng"]))
    if "numpy_rng" in saved:
        kind, keys, pos, has_gauss, gauss = saved["numpy_rng"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))


def _save_state(run: RunContext, trainee: Trainee, state: FitState) -> None:
    """Every process's RNGs go to rank 0, which writes the state (all processes call this together)."""
    rngs = run.dist.gather(_process_rngs())
    if not run.dist.is_main:
        return
    ckpt.save_training_state(run.files.state, {
        "model": trainee.model.state_dict(), "optimizer": trainee.opt.state_dict(),
        "scheduler": trainee.sched.state_dict(), **rngs[0], "process_rngs": rngs,
        "loader_rng": run.generator.get_state(), "augment_rng": run.augment_generator.get_state(),
        **asdict(state)})


def fit(run: RunContext, state: FitState, trainee: Trainee) -> FitState:
    """Run the remaining epochs of ``run.cfg``; each ends with evaluation, the best checkpoint and resume
    state. Resume state is also saved every ``cfg.checkpoint_every`` optimizer steps and at a stop
    request (then ``TrainingStopped`` is raised)."""
    cfg, model, dist = run.cfg, trainee.model, run.dist
    epochs, metric, patience = cfg.optim.epochs, cfg.optim.metric, cfg.optim.early_stopping_patience
    sampler = trainee.loader.batch_sampler
    for epoch in range(state.epoch + 1, epochs + 1):
        if patience and state.stale >= patience:
            break
        t0 = time.monotonic()
        (trainee.train_mode or model.train)()
        eval_s = float(np.mean([h["seconds"] - h["train_seconds"] for h in state.history])) if state.history else 0.0
        start = None
        if state.position is not None:  # a mid-epoch resume: the same order, the batches not yet done
            run.generator.set_state(state.position["epoch_rng"])
            sampler.start = state.position["step"]
            start = EpochPosition(state.position["step"], state.position["loss_sum"], state.position["count"])
        epoch_rng = run.generator.get_state()
        steps_done = 0

        def after_step(pos: EpochPosition) -> None:
            nonlocal steps_done
            steps_done += 1
            stop = dist.any(stop_requested())  # processes see a SIGTERM at different steps: stop together
            if stop or (cfg.checkpoint_every and steps_done % cfg.checkpoint_every == 0 and pos.step < len(sampler)):
                state.position = {"step": pos.step, "loss_sum": dist.sum_float(float(pos.loss_sum)),
                                  "count": dist.sum_int(pos.count), "epoch_rng": epoch_rng}
                _save_state(run, trainee, state)
            if stop:
                run.log(f"stopped at step {pos.step} of epoch {epoch}; resume continues from there")
                raise TrainingStopped()

        train_loss = train_one_epoch(model, trainee.loader, trainee.opt, trainee.sched, trainee.compute_loss,
                                     run.setup, cfg.optim.grad_accum, epoch, epochs, run.progress, eval_s,
                                     start, cfg.log_every, after_step, dist, trainee.no_sync)
        train_seconds = time.monotonic() - t0
        # Every process evaluates (they stay in step); rank 0's metrics decide for all.
        metrics = dist.broadcast({"train_loss": train_loss, **trainee.evaluate()})
        seconds = time.monotonic() - t0
        state.history.append({"epoch": epoch, **metrics, "seconds": seconds, "train_seconds": train_seconds,
                              "lr": trainee.sched.get_last_lr()[0]})
        improved = _better(metric, metrics[metric], state.best_metric)
        if improved:
            state.best_metric, state.best_epoch, state.stale = metrics[metric], epoch, 0
            if dist.is_main:
                trainee.save_best(epoch, metrics)
        else:
            state.stale += 1
        state.epoch, state.position = epoch, None
        _save_state(run, trainee, state)
        run.progress(EpochEnd(epoch, epochs, metrics, seconds, improved))
    if patience and state.stale >= patience:
        run.log(f"early stopping: no {metric} improvement for {state.stale} epoch(s)")
    dist.barrier()  # the best checkpoint is on disk for every process
    return state


def follower_result(run: RunContext, state: FitState) -> RunResult:
    """What a recipe returns on a process other than rank 0 (which writes the final report)."""
    return RunResult(run.files.root, state.best_epoch, {}, {})


def finish_run(run: RunContext, state: FitState, report: dict, final: dict,
               confusion: tuple[np.ndarray, list[str]] | None = None) -> RunResult:
    """The last step of every recipe: warn about a degenerate model, write report.json and the plots.

    ``report`` holds the recipe's own fields (``degenerate`` included); the run's common ones are added.
    """
    cfg = run.cfg
    for reason in report.get("degenerate", []):
        run.log(f"warning: degenerate model: {reason}", level="warning")
    report = {"run_dir": str(run.files.root), "task": cfg.task, "arch": cfg.model.arch, "method": cfg.method,
              "device": run.setup.describe(), **report, "history": state.history, "best_epoch": state.best_epoch,
              "best_metric": {cfg.optim.metric: state.best_metric}, "before": state.before, "final": final}
    ckpt.save_json(run.files.report, report)
    plot_curves(state.history, run.files.root / "curves.png", cfg.task)
    if confusion is not None:
        plot_confusion(*confusion, run.files.root / "confusion.png")
    return RunResult(run.files.root, state.best_epoch, final, report)


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
