"""The text classification recipe: ``train_text(config, out_dir) -> RunResult``.

Plain steps, top to bottom: rows -> validation report -> model + tokenizer -> method ->
token lengths -> optimizer -> epochs (``fit``) -> best checkpoint -> final report. Sequence
classification here; instruction tuning's loss, metrics and report live in ``instruct.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from edgetune.errors import InvalidArgument
from edgetune.progress import LogLine, ProgressSink, silent

from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.fit import FitState, begin_run, fit, restore
from edgetune.trainers.recipes.image_classification import RunResult
from edgetune.trainers.loop import build_optimizer, build_scheduler, evaluate, predict_logits, score
from edgetune.trainers.metrics import degenerate_reasons
from edgetune.trainers.methods import apply_text_method, plain_model, prompt_embeddings, trainable_parameters
from edgetune.trainers.report import final_metrics, plot_confusion, plot_curves
from edgetune.trainers.run import PARITY_SAMPLES, RunFiles
from edgetune.trainers.data.texts import TextFields, add_token_lengths, load_text_data
from edgetune.trainers.models.text import (CLASSIFICATION, check_positions, create_text_model, load_tokenizer,
                          resolve_text_weights)
from edgetune.trainers.text_run import load_text_run

EVAL_BATCH = 64


class TokenizedRows(torch.utils.data.Dataset):
    """Token id lists and integer labels; batches are padded to their longest row."""

    def __init__(self, ids: list[list[int]], labels: list[int]):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], self.labels[i]


def pad_collate(pad_id: int):
    """Right-pad a batch of (ids, label) to its longest row: input_ids, attention_mask, labels."""

    def collate(batch):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (ids, _) in enumerate(batch):
            input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, :len(ids)] = 1
        return input_ids, mask, torch.tensor([y for _, y in batch], dtype=torch.long)

    return collate


def text_forward(model: nn.Module, device: torch.device):
    """(input_ids, attention_mask, labels) batches -> (logits, labels) on the device."""

    def forward(batch):
        ids, mask, y = (t.to(device, non_blocking=True) for t in batch)
        return model(input_ids=ids, attention_mask=mask).logits, y

    return forward


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids truncated to ``max_length`` (special tokens kept), and the untruncated lengths."""
    full = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    cut = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    return cut, [len(x) for x in full]


def train_text(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
               resume: bool = False) -> RunResult:
    """Fine-tune a text model and write the run directory (see ``run.py`` for the layout).

    Args:
        cfg: the resolved config (``task`` text_classification or text_generation).
        out_dir: the run directory; must not hold a finished run unless ``resume``.
        progress: receives step, epoch and log events.
        resume: continue from ``out_dir/state/last.pt`` after the last finished epoch.
    """
    if cfg.task != CLASSIFICATION:
        raise InvalidArgument("task", f"train_text does not handle {cfg.task!r}")
    files, generator, setup = begin_run(cfg, out_dir, resume, progress)

    train_rows, val_rows, data_report, source, model, tokenizer, weights_info = prepare_text(cfg, files, resume)
    classes = data_report.classes
    model.config.id2label = dict(enumerate(classes))
    model.config.label2id = {c: i for i, c in enumerate(classes)}
    progress(LogLine(f"weights: {weights_info['source']}"))
    train_ids, lengths = encode(tokenizer, train_rows.a, cfg.data.max_length)
    val_ids, _ = encode(tokenizer, val_rows.a, cfg.data.max_length)
    add_token_lengths(data_report, lengths, cfg.data.max_length)
    progress(LogLine(data_report.summary()))
    base_state = {k: v.clone() for k, v in model.state_dict().items()} if source.kind == "random" else None
    model = apply_text_method(model, cfg)
    trainable, total = trainable_parameters(model)
    progress(LogLine(f"method {cfg.method}: {trainable:,} of {total:,} parameters train "
                     f"({100 * trainable / total:.2f}%)"))
    model.to(setup.device)

    label_of = {c: i for i, c in enumerate(classes)}
    collate = pad_collate(tokenizer.pad_token_id)
    train_loader = DataLoader(TokenizedRows(train_ids, [label_of[y] for y in train_rows.b]),
                              batch_size=cfg.optim.batch_size, shuffle=True, generator=generator, collate_fn=collate)
    val_loader = DataLoader(TokenizedRows(val_ids, [label_of[y] for y in val_rows.b]), batch_size=EVAL_BATCH,
                            collate_fn=collate)
    forward = text_forward(model, setup.device)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, -(-len(train_loader) // cfg.optim.grad_accum))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)

    def compute_loss(batch):
        logits, labels = forward(batch)
        return loss_fn(logits.float(), labels), len(labels)

    if resume:
        state = restore(files, cfg, model, opt, sched, generator, progress)
    else:
        state = FitState()
        # Spread over the label-sorted val rows so every class is represented.
        order = np.argsort([label_of[y] for y in val_rows.b], kind="stable")
        keep = order[np.unique(np.linspace(0, len(order) - 1, PARITY_SAMPLES).astype(int))]
        start_text_run(files, cfg, tokenizer, base_state, [
            {"text": val_rows.a[i], "label": val_rows.b[i], "row": val_rows.rows[i]} for i in keep])

    meta = {"task": cfg.task, "arch": cfg.model.arch, "classes": classes, "max_length": cfg.data.max_length,
            "method": cfg.method, "weights": weights_info["source"],
            "base": {"kind": source.kind, "path": source.path, "sha256": weights_info.get("sha256")}}
    save_best = text_checkpoint_saver(files, cfg, model, meta)
    state = fit(cfg, files, state, model, opt, sched, generator, train_loader, compute_loss, setup,
                lambda: evaluate(model, val_loader, forward, setup, len(classes))[0], save_best, progress)

    # Final report on the best checkpoint, rebuilt from disk exactly as export will load it.
    best = load_text_run(files.root).model.to(setup.device)
    logits, labels = predict_logits(best, val_loader, _plain_forward(best, setup.device), setup)
    best_val, cm = score(logits, labels, len(classes))
    final = final_metrics(cm, classes)
    degenerate = degenerate_reasons(logits.numpy(), labels.numpy(), classes)
    for reason in degenerate:
        progress(LogLine(f"warning: degenerate model: {reason}", level="warning"))
    report = {
        "run_dir": str(files.root), "task": cfg.task, "arch": cfg.model.arch, "method": cfg.method,
        "device": setup.describe(), "weights": weights_info, "trainable_params": trainable, "total_params": total,
        "data": data_report.to_dict(), "history": state.history, "best_epoch": state.best_epoch,
        "best_metric": {cfg.optim.metric: state.best_metric}, "final": final, "best_val": best_val,
        "degenerate": degenerate,
    }
    ckpt.save_json(files.report, report)
    plot_curves(state.history, files.root / "curves.png")
    plot_confusion(cm, classes, files.root / "confusion.png")
    return RunResult(files.root, state.best_epoch, final, report)


PEFT_METHODS = ("lora", "ia3", "prompt_tuning")


def prepare_text(cfg: TrainConfig, files: RunFiles, resume: bool):
    """Rows (read, validated, split before anything expensive), then the model and its tokenizer
    from local weights. A resumed run keeps its saved tokenizer.

    Returns (train rows, val rows, data report, weights source, model, tokenizer, weights report).
    """
    fields = TextFields(cfg.data.text_field, cfg.data.label_field, cfg.data.prompt_field, cfg.data.response_field)
    train_rows, val_rows, data_report = load_text_data(cfg.data.path, cfg.data.val_path, cfg.task,
                                                       cfg.data.val_fraction, cfg.data.skip_corrupt, cfg.seed, fields)
    source = resolve_text_weights(cfg.model.arch, cfg.model.weights)
    saved_tokenizer = load_tokenizer(files.tokenizer) if resume and files.tokenizer.is_dir() else None
    # A random-init tokenizer learns from what the model will read: texts, or prompts and responses.
    corpus = train_rows.a if cfg.task == CLASSIFICATION else train_rows.a + train_rows.b
    model, tokenizer, weights_info = create_text_model(cfg.task, cfg.model.arch, source, len(data_report.classes),
                                                       cfg.seed, corpus, saved_tokenizer)
    check_positions(model, cfg.data.max_length, cfg.prompt.virtual_tokens if cfg.method == "prompt_tuning" else 0)
    return train_rows, val_rows, data_report, source, model, tokenizer, weights_info


def start_text_run(files: RunFiles, cfg: TrainConfig, tokenizer, base_state: dict | None,
                   parity_rows: list[dict]) -> None:
    """Create the run folder (only once set-up succeeded): config, tokenizer, the random-init
    base a peft adapter applies to, and the held-out rows the export's parity gate uses."""
    files.root.mkdir(parents=True, exist_ok=True)
    cfg.save(files.config)
    tokenizer.save_pretrained(str(files.tokenizer))
    if base_state is not None and cfg.method in PEFT_METHODS:
        ckpt.save_weights(files.base, base_state)
    ckpt.save_json(files.parity_texts, parity_rows)


def text_checkpoint_saver(files: RunFiles, cfg: TrainConfig, model: nn.Module, meta: dict):
    """``save_best`` for text runs: the plain (merged) model, and for peft methods the adapter
    (and prompt tuning's virtual tokens) so the export can check the merge."""

    def save_best(epoch: int, metrics: dict) -> None:
        plain = plain_model(model)
        ckpt.save_weights(files.weights, plain.state_dict(), {"arch": cfg.model.arch})
        if cfg.method == "prompt_tuning":
            ckpt.save_weights(files.prompt, {"prompt": prompt_embeddings(model)})
        if cfg.method in PEFT_METHODS:
            model.save_pretrained(str(files.adapter))
        ckpt.save_json(files.model_meta, {**meta, "hf_config": plain.config.to_dict(), "epoch": epoch,
                                          "metrics": metrics})

    return save_best


def _plain_forward(model: nn.Module, device: torch.device):
    """Batches -> (logits, labels) for a rebuilt run model (``forward(input_ids, attention_mask)``)."""

    def forward(batch):
        ids, mask, y = (t.to(device) for t in batch)
        return model(ids, mask), y

    return forward


