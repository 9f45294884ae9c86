"""The text classification recipe: ``train_text(config, out_dir) -> RunResult``.

Plain steps, top to bottom: rows -> validation report -> model + tokenizer -> method -> token
lengths -> epochs (``fit``) -> best checkpoint rebuilt from disk -> final report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgetune.errors import InvalidArgument
from edgetune.progress import ProgressSink, silent
from edgetune.tasks import TEXT_CLASSIFICATION, get_task
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.data.texts import add_token_lengths
from edgetune.trainers.data.tokenize import TokenizedRows, encode, pad_collate, row_loader
from edgetune.trainers.fit import (FitState, begin_run, finish_run, fit, follower_result, make_trainee, restore,
                                   training_module)
from edgetune.trainers.loop import evaluate, predict_logits, score
from edgetune.trainers.metrics import degenerate_reasons
from edgetune.trainers.recipes.text_steps import apply_text_method, prepare_text, start_text_run, text_checkpoint_saver
from edgetune.trainers.report import final_metrics
from edgetune.trainers.run import HELDOUT_SAMPLES, PARITY_SAMPLES, RunResult, load_run, stratified


def train_text(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
               resume: bool = False) -> RunResult:
    """Fine-tune a text classifier and write the run directory (see ``run.py`` for the layout).

    Args:
        cfg: the resolved config (task text_classification).
        out_dir: the run directory; must not hold a finished run unless ``resume``.
        progress: receives step, epoch and log events.
        resume: continue from ``out_dir/state/last.pt`` (mid-epoch when saved there).
    """
    if cfg.task != TEXT_CLASSIFICATION:
        raise InvalidArgument("task", f"train_text does not handle {cfg.task!r}")
    run = begin_run(cfg, out_dir, resume, progress)
    start = prepare_text(run)
    classes = start.data.classes
    start.model.config.id2label = dict(enumerate(classes))
    start.model.config.label2id = {c: i for i, c in enumerate(classes)}
    train_ids, lengths = encode(start.tokenizer, start.train.inputs, cfg.data.max_length)
    val_ids, _ = encode(start.tokenizer, start.val.inputs, cfg.data.max_length)
    add_token_lengths(start.data, lengths, cfg.data.max_length)
    run.log(start.data.summary())
    model, params = apply_text_method(run, start.model)
    model.to(run.setup.device)

    label_of = {c: i for i, c in enumerate(classes)}
    collate = pad_collate(start.tokenizer.pad_token_id)
    train_loader = row_loader(TokenizedRows(train_ids, [label_of[y] for y in start.train.targets]),
                              cfg.optim.batch_size, collate, run.generator, run.dist,
                              cfg.data.group_by_length)
    val_loader = row_loader(TokenizedRows(val_ids, [label_of[y] for y in start.val.targets]),
                            get_task(cfg.task).eval_batch, collate)
    forward = _forward(lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits, run.setup.device)
    trains = training_module(run, model)
    train_forward = _forward(lambda ids, mask: trains(input_ids=ids, attention_mask=mask).logits, run.setup.device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)

    def compute_loss(batch, share=None):
        logits, labels = train_forward(batch)
        return loss_fn(logits.float(), labels), len(labels)

    meta = {"task": cfg.task, "arch": cfg.model.arch, "classes": classes, "max_length": cfg.data.max_length,
            "method": cfg.method, "weights": start.weights["source"], "base": start.base_meta()}
    trainee = make_trainee(run, model, train_loader, compute_loss,
                           lambda: evaluate(model, val_loader, forward, run.setup, len(classes))[0],
                           text_checkpoint_saver(run, model, meta), trains=trains)
    if resume:
        state = restore(run, trainee)
    else:
        state = FitState()
        # Spread over the label-sorted val rows so every class is represented.
        order = np.argsort([label_of[y] for y in start.val.targets], kind="stable")
        keep = order[np.unique(np.linspace(0, len(order) - 1, PARITY_SAMPLES).astype(int))]
        def rows(indices):
            return [{"text": start.val.inputs[i], "label": start.val.targets[i], "row": start.val.rows[i]}
                    for i in indices]

        heldout = stratified([label_of[y] for y in start.val.targets], HELDOUT_SAMPLES, cfg.seed)
        start_text_run(run, start, rows(keep), rows(heldout))
    state = fit(run, state, trainee)
    if not run.dist.is_main:
        return follower_result(run, state)

    # Final report on the best checkpoint, rebuilt from disk exactly as export will load it.
    best = load_run(run.files.root).model.to(run.setup.device)
    logits, labels = predict_logits(best, val_loader, _forward(best, run.setup.device), run.setup)
    best_val, cm = score(logits, labels, len(classes))
    report = {"weights": start.weights, **params, "data": start.data.to_dict(), "best_val": best_val,
              "degenerate": degenerate_reasons(logits.numpy(), labels.numpy(), classes)}
    return finish_run(run, state, report, final_metrics(cm, classes), (cm, classes))


def _forward(logits_of, device: torch.device):
    """(input_ids, attention_mask, labels) batches -> (logits, labels) on the device."""

    def forward(batch):
        ids, mask, y = (t.to(device, non_blocking=True) for t in batch)
        return logits_of(ids, mask), y

    return forward
