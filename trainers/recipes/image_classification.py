"""The image classification recipe: ``train_image(config, out_dir) -> RunResult``.

Plain steps, top to bottom: data -> model -> method -> optimizer -> epochs -> best checkpoint
-> final report. The CLI, the server worker and the tests all call this one function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from edgetune.errors import InvalidArgument
from edgetune.runtime.imaging import Preprocessing
from edgetune.progress import LogLine, ProgressSink, silent

from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers.models.image import create_model, default_normalization
from edgetune.trainers.models.catalog import load_base_weights, resolve_weights
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.data.images import ImageTensors, load_image_data
from edgetune.trainers.fit import FitState, begin_run, fit, restore
from edgetune.trainers.loop import Normalizer, build_optimizer, build_scheduler, evaluate, image_forward, predict_logits, score
from edgetune.trainers.methods import apply_method, plain_model, set_train_mode, trainable_parameters
from edgetune.trainers.metrics import degenerate_reasons
from edgetune.trainers.report import final_metrics, format_summary, plot_confusion, plot_curves
from edgetune.trainers.run import PARITY_SAMPLES, RunFiles, load_run_model, read_model_meta

EVAL_BATCH = 128


@dataclass
class RunResult:
    run_dir: Path
    best_epoch: int
    metrics: dict  # final metrics of the best checkpoint on the val set
    report: dict

    def summary(self) -> str:
        return format_summary(self.report)


def train_image(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
                resume: bool = False) -> RunResult:
    """Fine-tune an image classifier and write the run directory.

    Args:
        cfg: the resolved training config.
        out_dir: the run directory; must not hold a finished run unless ``resume``.
        progress: receives step, epoch and log events.
        resume: continue from ``out_dir/state/last.pt`` after the last finished epoch.
    """
    files, generator, setup = begin_run(cfg, out_dir, resume, progress)

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
    forward = image_forward(model, norm, setup)
    steps_per_epoch = -(-len(train_loader) // cfg.optim.grad_accum)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps_per_epoch)
    train_loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)

    def compute_loss(batch):
        logits, labels = forward(batch)
        return train_loss_fn(logits, labels), len(labels)

    if resume:
        state = restore(files, cfg, model, opt, sched, generator, progress)
    else:
        state = FitState()
        files.root.mkdir(parents=True, exist_ok=True)  # only now: a run that fails set-up leaves nothing
        cfg.save(files.config)
        # Spread over the (class-ordered) val set so every class is represented.
        keep = np.unique(np.linspace(0, len(val_set.labels) - 1, PARITY_SAMPLES).astype(int))
        ckpt.save_numpy(files.parity_samples, {"pixels": val_set.pixels[keep], "labels": val_set.labels[keep]},
                        {"paths": json.dumps([val_set.paths[i] for i in keep])})
        if prior:
            state.before, _ = evaluate(model, val_loader, forward, setup, len(classes))
            progress(LogLine(f"before re-tuning: {state.before}"))

    meta = {"arch": cfg.model.arch, "classes": classes, "image_size": cfg.data.image_size,
            "create_kwargs": create_kwargs, "preprocessing": prep.to_dict(), "method": cfg.method,
            "weights": weights_info["source"]}

    def save_best(epoch: int, metrics: dict) -> None:
        ckpt.save_weights(files.weights, plain_model(model).state_dict(), {"arch": cfg.model.arch})
        ckpt.save_json(files.model_meta, {**meta, "epoch": epoch, "metrics": metrics})

    state = fit(cfg, files, state, model, opt, sched, generator, train_loader, compute_loss, setup,
                lambda: evaluate(model, val_loader, forward, setup, len(classes))[0], save_best, progress,
                train_mode=lambda: set_train_mode(model, cfg.method))

    # Final report on the best checkpoint.
    best = load_run_model(files.root)
    best_model = best.model.to(setup.device)
    if setup.channels_last:
        best_model.to(memory_format=torch.channels_last)
    logits, labels = predict_logits(best_model, val_loader, image_forward(best_model, norm, setup), setup)
    best_val, cm = score(logits, labels, len(classes))
    final = final_metrics(cm, classes)
    degenerate = degenerate_reasons(logits.numpy(), labels.numpy(), classes)
    for reason in degenerate:
        progress(LogLine(f"warning: degenerate model: {reason}", level="warning"))
    report = {
        "run_dir": str(files.root), "arch": cfg.model.arch, "method": cfg.method,
        "device": setup.describe(), "weights": weights_info, "trainable_params": trainable,
        "total_params": total, "data": data_report.to_dict(), "history": state.history,
        "best_epoch": state.best_epoch, "best_metric": {cfg.optim.metric: state.best_metric},
        "before": state.before, "after": best_val if state.before else None, "final": final,
        "degenerate": degenerate,
    }
    ckpt.save_json(files.report, report)
    plot_curves(state.history, files.root / "curves.png")
    plot_confusion(cm, classes, files.root / "confusion.png")
    return RunResult(files.root, state.best_epoch, final, report)
