"""The instruction-tuning recipe: ``train_instruct(config, out_dir) -> RunResult``.

(prompt, response) rows -> validation report -> causal LM + tokenizer -> the base model's
metrics on the val set -> method -> epochs (``fit``, loss on response tokens only) -> best
checkpoint -> final report with the base and tuned metrics side by side: val loss, perplexity,
next-token accuracy, and exact match and chrF of greedy outputs.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from edgetune.errors import DataError, InvalidArgument
from edgetune.progress import LogLine, ProgressSink, silent
from edgetune.runtime.prompting import prompt_format

from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.fit import FitState, begin_run, fit, restore
from edgetune.trainers.generation import encode_pairs, evaluate_loss, generation_metrics, pad_pairs, response_loss
from edgetune.trainers.recipes.image_classification import RunResult
from edgetune.trainers.loop import build_optimizer, build_scheduler
from edgetune.trainers.methods import apply_text_method, trainable_parameters
from edgetune.trainers.report import plot_curves
from edgetune.trainers.run import PARITY_SAMPLES
from edgetune.trainers.recipes.text_classification import TokenizedRows, prepare_text, start_text_run, text_checkpoint_saver
from edgetune.trainers.data.texts import add_token_lengths
from edgetune.trainers.models.text import GENERATION
from edgetune.trainers.text_run import load_text_run, load_unmerged

EVAL_BATCH = 16
GENERATION_SAMPLES = 32  # val prompts decoded greedily for exact match / chrF
MAX_NEW_TOKENS = 64


def train_instruct(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
                   resume: bool = False) -> RunResult:
    """Instruction-tune a causal LM and write the run directory (see ``run.py``)."""
    if cfg.task != GENERATION:
        raise InvalidArgument("task", f"train_instruct does not handle {cfg.task!r}")
    files, generator, setup = begin_run(cfg, out_dir, resume, progress)

    train_rows, val_rows, data_report, source, model, tokenizer, weights_info = prepare_text(cfg, files, resume)
    progress(LogLine(f"weights: {weights_info['source']}"))
    fmt = prompt_format(tokenizer)
    train_pairs, lengths, dropped = encode_pairs(tokenizer, fmt, train_rows.a, train_rows.b, cfg.data.max_length)
    val_pairs, _, val_dropped = encode_pairs(tokenizer, fmt, val_rows.a, val_rows.b, cfg.data.max_length)
    add_token_lengths(data_report, lengths, cfg.data.max_length)
    if dropped or val_dropped:
        data_report.warnings.append(f"{dropped + val_dropped} row(s) have no response token left within "
                                    f"max_length {cfg.data.max_length} and are left out")
    if not train_pairs or not val_pairs:
        raise DataError("data.max_length", "no rows keep a response token within max_length; raise it")
    progress(LogLine(data_report.summary()))

    collate = pad_pairs(tokenizer.pad_token_id)
    train_loader = DataLoader(TokenizedRows([p[0] for p in train_pairs], [p[1] for p in train_pairs]),
                              batch_size=cfg.optim.batch_size, shuffle=True, generator=generator,
                              collate_fn=collate)
    val_loader = DataLoader(TokenizedRows([p[0] for p in val_pairs], [p[1] for p in val_pairs]),
                            batch_size=EVAL_BATCH, collate_fn=collate)
    n_gen = min(GENERATION_SAMPLES, len(val_rows))
    max_new = min(MAX_NEW_TOKENS, max(len(tokenizer(r)["input_ids"]) for r in val_rows.b[:n_gen]) + 1)

    def quality(m) -> dict:
        return {**evaluate_loss(m, val_loader, setup),
                **generation_metrics(m, tokenizer, fmt, val_rows.a[:n_gen], val_rows.b[:n_gen], max_new)}

    base_state = {k: v.clone() for k, v in model.state_dict().items()} if source.kind == "random" else None
    model.to(setup.device)
    before = quality(model) if not resume else None  # the base model on the same val set
    model = apply_text_method(model, cfg)
    trainable, total = trainable_parameters(model)
    progress(LogLine(f"method {cfg.method}: {trainable:,} of {total:,} parameters train "
                     f"({100 * trainable / total:.2f}%)"))
    model.to(setup.device)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, -(-len(train_loader) // cfg.optim.grad_accum))

    def compute_loss(batch):
        loss, _, n = response_loss(model, batch, setup.device)
        return loss, n

    if resume:
        state = restore(files, cfg, model, opt, sched, generator, progress)
    else:
        state = FitState(before=before)
        start_text_run(files, cfg, tokenizer, base_state, [
            {"prompt": p, "response": r, "row": n}
            for p, r, n in list(zip(val_rows.a, val_rows.b, val_rows.rows))[:PARITY_SAMPLES]])
        progress(LogLine(f"base model: val loss {before['val_loss']:.4f}, chrF {before['chrf']:.1f}"))

    meta = {"task": cfg.task, "arch": cfg.model.arch, "classes": [], "max_length": cfg.data.max_length,
            "method": cfg.method, "weights": weights_info["source"], "prompt_format": fmt,
            "max_new_tokens": max_new,
            "base": {"kind": source.kind, "path": source.path, "sha256": weights_info.get("sha256")}}

    save_best = text_checkpoint_saver(files, cfg, model, meta)
    state = fit(cfg, files, state, model, opt, sched, generator, train_loader, compute_loss, setup,
                lambda: evaluate_loss(model, val_loader, setup), save_best, progress)

    # Final report on the best checkpoint as saved (prompt tuning needs its virtual tokens: peft).
    best = (load_unmerged(files.root) if cfg.method == "prompt_tuning" else load_text_run(files.root).model)
    after = quality(best.to(setup.device))
    degenerate = []
    if after["distinct_outputs"] == 1 and len(set(val_rows.b[:n_gen])) > 1:
        degenerate.append(f"greedy outputs are constant: the same text for all {n_gen} val prompts, whose "
                          "references differ")
    for reason in degenerate:
        progress(LogLine(f"warning: degenerate model: {reason}", level="warning"))
    report = {
        "run_dir": str(files.root), "task": cfg.task, "arch": cfg.model.arch, "method": cfg.method,
        "device": setup.describe(), "weights": weights_info, "trainable_params": trainable, "total_params": total,
        "data": data_report.to_dict(), "history": state.history, "best_epoch": state.best_epoch,
        "best_metric": {cfg.optim.metric: state.best_metric}, "prompt_format": fmt["kind"],
        "before": state.before, "final": after, "degenerate": degenerate,
    }
    ckpt.save_json(files.report, report)
    plot_curves(state.history, files.root / "curves.png")
    return RunResult(files.root, state.best_epoch, after, report)

