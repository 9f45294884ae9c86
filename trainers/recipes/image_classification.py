"""The image classification recipe: ``train_image(config, out_dir) -> RunResult``.

Plain steps, top to bottom: data -> model (local base weights, or an earlier run to re-tune) ->
method -> epochs (``fit``) -> best checkpoint rebuilt from disk -> final report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from edgetune.errors import InvalidArgument
from edgetune.progress import ProgressSink, silent
from edgetune.runtime.imaging import Preprocessing
from edgetune.tasks import get_task
from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.data.augment import BatchAugment
from edgetune.trainers.data.images import ImageSet, load_image_data
from edgetune.trainers.data.sampling import EpochBatches
from edgetune.trainers.data.tensors import image_loader, loader_workers
from edgetune.trainers.fit import (FitState, RunContext, begin_run, finish_run, fit, follower_result, make_trainee,
                                   restore, training_module)
from edgetune.trainers.loop import Normalizer, evaluate, image_forward, predict_logits, score
from edgetune.trainers.methods import apply_method, plain_model, set_train_mode, trainable_parameters
from edgetune.trainers.metrics import degenerate_reasons
from edgetune.trainers.models.image import create_model, default_normalization, load_base_weights
from edgetune.trainers.models.weights import resolve_weights
from edgetune.trainers.report import final_metrics
from edgetune.trainers.run import (CALIBRATION_SAMPLES, HELDOUT_BYTES, HELDOUT_SAMPLES, PARITY_SAMPLES, RunFiles,
                                   RunResult, load_run, read_model_meta, stratified)


def train_image(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
                resume: bool = False) -> RunResult:
    """Fine-tune an image classifier and write the run directory (see ``run.py`` for the layout).

    Args:
        cfg: the resolved training config.
        out_dir: the run directory; must not hold a finished run unless ``resume``.
        progress: receives step, epoch and log events.
        resume: continue from ``out_dir/state/last.pt`` (mid-epoch when saved there).
    """
    run = begin_run(cfg, out_dir, resume, progress)
    prior = _prior_run(cfg)
    with run.dist.main_first():  # under DDP the others then read what rank 0 cached
        train_set, val_set, data = load_image_data(
            cfg.data.path, cfg.data.val_path, cfg.data.image_size, cfg.data.val_fraction, cfg.data.skip_corrupt,
            cfg.seed, classes=prior["classes"] if prior else None, cache=cfg.data.cache, log=run.log)
    classes = data.classes
    run.log(data.summary())
    model, create_kwargs, weights = _base_model(cfg, len(classes), prior)
    run.log(f"weights: {weights['source']}")
    prep = Preprocessing(cfg.data.image_size, *default_normalization(model))
    model = apply_method(model, cfg)
    trainable, total = trainable_parameters(model)
    model.to(run.setup.device)
    if run.setup.channels_last:
        model.to(memory_format=torch.channels_last)

    cuda = run.setup.device.type == "cuda"
    workers = loader_workers(train_set, cuda, cfg.data.workers, run.dist.world)
    batches = EpochBatches(len(train_set), cfg.optim.batch_size, run.generator, run.dist.rank, run.dist.world)
    train_loader = image_loader(train_set, batches, workers, cuda)
    val_loader = image_loader(val_set, EpochBatches(len(val_set), get_task(cfg.task).eval_batch),
                              min(workers, 2), cuda)
    run.log(f"data: {'decoded cache on disk' if train_set.pixels_file else 'decoding per batch'}, "
            f"{workers} loader worker(s)")
    norm = Normalizer(prep.mean, prep.std).to(run.setup.device)
    forward = image_forward(model, norm, run.setup)
    augment = BatchAugment(run.augment_generator, cfg.data.hflip) if cfg.data.augment else None
    trains = training_module(run, model)
    train_forward = image_forward(trains, norm, run.setup, augment)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)

    def compute_loss(batch, share=None):
        logits, labels = train_forward(batch, share)
        return loss_fn(logits, labels), len(labels)

    meta = {"task": cfg.task, "arch": cfg.model.arch, "classes": classes, "image_size": cfg.data.image_size,
            "create_kwargs": create_kwargs, "preprocessing": prep.to_dict(), "method": cfg.method,
            "weights": weights["source"]}

    def save_best(epoch: int, metrics: dict) -> None:
        ckpt.save_weights(run.files.weights, plain_model(model).state_dict(), {"arch": cfg.model.arch})
        ckpt.save_json(run.files.model_meta, {**meta, "epoch": epoch, "metrics": metrics})

    def val_metrics() -> dict:
        return evaluate(model, val_loader, forward, run.setup, len(classes))[0]

    trainee = make_trainee(run, model, train_loader, compute_loss, val_metrics, save_best,
                           train_mode=lambda: set_train_mode(model, cfg.method), trains=trains)
    state = restore(run, trainee) if resume else _start(run, train_set, val_set, val_metrics if prior else None)
    state = fit(run, state, trainee)
    if not run.dist.is_main:
        return follower_result(run, state)

    # Final report on the best checkpoint, rebuilt from disk exactly as export will load it.
    best = load_run(run.files.root).model.to(run.setup.device)
    if run.setup.channels_last:
        best.to(memory_format=torch.channels_last)
    logits, labels = predict_logits(best, val_loader, image_forward(best, norm, run.setup), run.setup)
    best_val, cm = score(logits, labels, len(classes))
    report = {"weights": weights, "trainable_params": trainable, "total_params": total, "data": data.to_dict(),
              "after": best_val if state.before else None,
              "degenerate": degenerate_reasons(logits.numpy(), labels.numpy(), classes)}
    return finish_run(run, state, report, final_metrics(cm, classes), (cm, classes))


def _prior_run(cfg: TrainConfig) -> dict | None:
    """The run being re-tuned (``model.init_from``): same architecture, same image size."""
    if not cfg.model.init_from:
        return None
    prior = read_model_meta(cfg.model.init_from)
    if prior["arch"] != cfg.model.arch:
        raise InvalidArgument("model.init_from", f"run is {prior['arch']}, config asks for {cfg.model.arch}")
    if prior["image_size"] != cfg.data.image_size:
        raise InvalidArgument("data.image_size", f"run {cfg.model.init_from} was trained at "
                              f"{prior['image_size']}px; re-tune at the same size")
    return prior


def _base_model(cfg: TrainConfig, num_classes: int, prior: dict | None) -> tuple[nn.Module, dict, dict]:
    """The model to fine-tune: local base weights, or an earlier run's. Returns (model, create kwargs, weights)."""
    if prior:
        create_kwargs = prior.get("create_kwargs", {})
        model = create_model(cfg.model.arch, num_classes, cfg.data.image_size, create_kwargs)
        model.load_state_dict(load_file(str(RunFiles(Path(cfg.model.init_from)).weights)))
        return model, create_kwargs, {"source": f"run {cfg.model.init_from}", "loaded_tensors": None}
    source = resolve_weights(cfg.model.arch, cfg.model.weights)
    model = create_model(cfg.model.arch, num_classes, cfg.data.image_size, source.create_kwargs)
    return model, source.create_kwargs, load_base_weights(model, source)


def _start(run: RunContext, train_set: ImageSet, val_set: ImageSet, evaluate_prior) -> FitState:
    """Create the run folder (only now: a run that fails set-up leaves nothing): the config,
    held-out validation images for the export's parity and accuracy gates, and class-stratified
    training images for INT8 calibration. A re-tune records the model before."""
    state = FitState()
    if run.dist.is_main:
        run.files.root.mkdir(parents=True, exist_ok=True)
        run.cfg.save(run.files.config)
        # Spread over the (class-ordered) val set so every class is represented.
        keep = np.unique(np.linspace(0, len(val_set.labels) - 1, PARITY_SAMPLES).astype(int))
        ckpt.save_numpy(run.files.parity_samples, {"pixels": val_set.read(keep), "labels": val_set.labels[keep]},
                        {"paths": json.dumps([val_set.paths[i] for i in keep])})
        row_bytes = val_set.size * val_set.size * 3
        for path, images, n in ((run.files.heldout, val_set, min(HELDOUT_SAMPLES, HELDOUT_BYTES // row_bytes)),
                                (run.files.calibration, train_set, CALIBRATION_SAMPLES)):
            keep = stratified(images.labels, n, run.cfg.seed)
            ckpt.save_numpy(path, {"pixels": images.read(keep), "labels": images.labels[keep]})
    if evaluate_prior is not None:
        state.before = evaluate_prior()
        run.log(f"before re-tuning: {state.before}")
    return state
