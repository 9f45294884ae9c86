"""The image classification recipe: ``train_image(config, out_dir) -> RunResult``.

Plain steps, top to bottom: data -> model -> method -> optimizer -> epochs -> best checkpoint
-> final report. The CLI, the server worker and the tests all call this one function.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from edgetune.errors import InvalidArgument
from edgetune.imaging import Preprocessing
from edgetune.progress import EpochEnd, LogLine, ProgressSink, silent

from . import checkpoint as ckpt
from .architectures import create_model, default_normalization
from .catalog import load_base_weights, resolve_weights
from .config import TrainConfig, config_from_dict
from .data import ImageTensors, load_image_data
from .loop import (Normalizer, build_optimizer, build_scheduler, evaluate, resolve_device,
                   train_one_epoch)
from .methods import apply_method, plain_model, set_train_mode, trainable_parameters
from .report import final_metrics, format_summary, plot_confusion, plot_curves
from .run import PARITY_SAMPLES, RunFiles, load_run_model, read_model_meta

EVAL_BATCH = 128


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    metrics: dict  # final metrics of the best checkpoint on the val set
    report: dict

    def summary(self) -> str:
        return format_summary(self.report)


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


def train_image(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
                resume: bool = False) -> RunResult:
    """Fine-tune an image classifier and write the run directory.

    Args:
        cfg: the resolved training config.
        out_dir: the run directory; must not hold a finished run unless ``resume``.
        progress: receives step, epoch and log events.
        resume: continue from ``out_dir/state/last.pt`` after the last finished epoch.
    """
    files = RunFiles(Path(out_dir))
    if not resume and (files.state.exists() or files.weights.exists()):
        raise InvalidArgument("out", f"{out_dir} already holds a run; pick a new --out or --resume it")
    generator = _seed_everything(cfg.seed)
    setup = resolve_device(cfg.device)
    progress(LogLine(f"device: {setup.describe()}"))

    # Data: decode, validate and split before anything expensive.
    prior = read_model_meta(cfg.model.init_from) if cfg.model.init_from else None
    if prior and prior["arch"] != cfg.model.arch:
        raise InvalidArgument("model.init_from", f"run is {prior['arch']}, config asks for {cfg.model.arch}")
    if prior and prior["image_size"] != cfg.data.image_size:
        raise InvalidArgument("data.image_size", f"run {cfg.model.init_from} was trained at "
                              f"{prior['image_size']}px; re-tune at the same size")
    train_set, val_set, data_report = load_image_data(
        cfg.data.path, cfg.data.val_path, cfg.data.image_size, cfg.data.val_fraction,
        cfg.data.skip_corrupt, cfg.seed, classes=prior["classes"] if prior else None)
    classes = data_report.classes
    progress(LogLine(data_report.summary()))

    # Model: local base weights (or an earlier run to re-tune), then the method.
    if prior:
        create_kwargs = prior.get("create_kwargs", {})
        weights_info = {"source": f"run {cfg.model.init_from}", "loaded_tensors": None}
        model = create_model(cfg.model.arch, len(classes), cfg.data.image_size, create_kwargs)
        model.load_state_dict(load_file(str(RunFiles(Path(cfg.model.init_from)).weights)))
    else:
        source = resolve_weights(cfg.model.arch, cfg.model.weights)
        create_kwargs = source.create_kwargs
        model = create_model(cfg.model.arch, len(classes), cfg.data.image_size, create_kwargs)
        weights_info = load_base_weights(model, source)
    progress(LogLine(f"weights: {weights_info['source']}"))
    mean, std = default_normalization(model)
    prep = Preprocessing(cfg.data.image_size, mean, std)
    model = apply_method(model, cfg)
    trainable, total = trainable_parameters(model)
    model.to(setup.device)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)

    train_loader = DataLoader(ImageTensors(train_set, cfg.data.augment, cfg.data.hflip),
                              batch_size=cfg.optim.batch_size, shuffle=True, generator=generator,
                              pin_memory=setup.device.type == "cuda")
    val_loader = DataLoader(ImageTensors(val_set), batch_size=EVAL_BATCH)
    norm = Normalizer(mean, std).to(setup.device)
    steps_per_epoch = -(-len(train_loader) // cfg.optim.grad_accum)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps_per_epoch)
    train_loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    eval_loss_fn = nn.CrossEntropyLoss()

    history, best_metric, best_epoch, stale, start_epoch, before = [], None, 0, 0, 1, None
    if resume:
        saved = config_from_dict(ckpt_config(files))
        if saved != cfg:
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
        history, best_metric, best_epoch = state["history"], state["best_metric"], state["best_epoch"]
        stale, start_epoch, before = state["stale"], state["epoch"] + 1, state.get("before")
        progress(LogLine(f"resuming after epoch {state['epoch']}"))
    else:
        files.root.mkdir(parents=True, exist_ok=True)  # only now: a run that fails set-up leaves nothing
        cfg.save(files.config)
        # Spread over the (class-ordered) val set so every class is represented.
        keep = np.unique(np.linspace(0, len(val_set.labels) - 1, PARITY_SAMPLES).astype(int))
        ckpt.save_numpy(files.parity_samples, {"pixels": val_set.pixels[keep], "labels": val_set.labels[keep]},
                        {"paths": json.dumps([val_set.paths[i] for i in keep])})
        if prior:
            before, _ = evaluate(model, val_loader, eval_loss_fn, norm, setup, len(classes))
            progress(LogLine(f"before re-tuning: {before}"))

    meta = {"arch": cfg.model.arch, "classes": classes, "image_size": cfg.data.image_size,
            "create_kwargs": create_kwargs, "preprocessing": prep.to_dict(), "method": cfg.method,
            "weights": weights_info["source"]}
    epochs = cfg.optim.epochs
    for epoch in range(start_epoch, epochs + 1):
        if cfg.optim.early_stopping_patience and stale >= cfg.optim.early_stopping_patience:
            break
        t0 = time.monotonic()
        set_train_mode(model, cfg.method)
        train_loss = train_one_epoch(model, train_loader, opt, sched, train_loss_fn, norm, setup,
                                     cfg.optim.grad_accum, epoch, epochs, progress)
        train_seconds = time.monotonic() - t0
        val_metrics, _ = evaluate(model, val_loader, eval_loss_fn, norm, setup, len(classes))
        metrics = {"train_loss": train_loss, **val_metrics}
        seconds = time.monotonic() - t0
        history.append({"epoch": epoch, **metrics, "seconds": seconds, "train_seconds": train_seconds,
                        "lr": sched.get_last_lr()[0]})
        improved = _better(cfg.optim.metric, metrics[cfg.optim.metric], best_metric)
        if improved:
            best_metric, best_epoch, stale = metrics[cfg.optim.metric], epoch, 0
            best = plain_model(model)
            ckpt.save_weights(files.weights, best.state_dict(), {"arch": cfg.model.arch})
            ckpt.save_json(files.model_meta, {**meta, "epoch": epoch, "metrics": metrics})
        else:
            stale += 1
        ckpt.save_training_state(files.state, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if setup.device.type == "cuda" else [],
            "loader_rng": generator.get_state(), "python_rng": random.getstate(),
            "history": history, "best_metric": best_metric, "best_epoch": best_epoch,
            "stale": stale, "before": before})
        progress(EpochEnd(epoch, epochs, metrics, seconds, improved))
    if cfg.optim.early_stopping_patience and stale >= cfg.optim.early_stopping_patience:
        progress(LogLine(f"early stopping: no {cfg.optim.metric} improvement for {stale} epoch(s)"))

    # Final report on the best checkpoint.
    best = load_run_model(files.root)
    best_model = best.model.to(setup.device)
    if setup.channels_last:
        best_model.to(memory_format=torch.channels_last)
    best_val, cm = evaluate(best_model, val_loader, eval_loss_fn, norm, setup, len(classes))
    final = final_metrics(cm, classes)
    report = {
        "run_dir": str(files.root), "arch": cfg.model.arch, "method": cfg.method,
        "device": setup.describe(), "weights": weights_info, "trainable_params": trainable,
        "total_params": total, "data": data_report.to_dict(), "history": history,
        "best_epoch": best_epoch, "best_metric": {cfg.optim.metric: best_metric},
        "before": before, "after": best_val if before else None, "final": final,
    }
    ckpt.save_json(files.report, report)
    plot_curves(history, files.root / "curves.png")
    plot_confusion(cm, classes, files.root / "confusion.png")
    return RunResult(files.root, best_epoch, final, report)


def ckpt_config(files: RunFiles) -> dict:
    import yaml

    if not files.config.is_file() or not files.state.is_file():
        raise InvalidArgument("resume", f"{files.root} has no config.yaml and state/last.pt to resume from")
    return yaml.safe_load(files.config.read_text())


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
