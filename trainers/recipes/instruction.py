"""The instruction-tuning recipe: ``train_instruct(config, out_dir) -> RunResult``.

(prompt, response) rows -> validation report -> causal LM + tokenizer -> the base model's
metrics on the val set -> method -> epochs (``fit``, loss on response tokens only) -> best
checkpoint -> final report with the base and tuned metrics side by side: val loss, perplexity,
next-token accuracy, and exact match and chrF of greedy outputs.
"""

from __future__ import annotations

from pathlib import Path


from edgetune.errors import DataError, InvalidArgument
from edgetune.progress import ProgressSink, silent
from edgetune.runtime.prompting import prompt_format
from edgetune.tasks import PROMPT_TUNING, TEXT_GENERATION, get_task
from edgetune.trainers.config import TrainConfig
from edgetune.trainers.data.texts import add_token_lengths
from edgetune.trainers.data.tokenize import TokenizedRows, row_loader
from edgetune.trainers.fit import (FitState, begin_run, finish_run, fit, follower_result, make_trainee, restore,
                                   training_module)
from edgetune.trainers.generation import encode_pairs, evaluate_loss, generation_metrics, pad_pairs, response_loss
from edgetune.trainers.recipes.text_steps import apply_text_method, prepare_text, start_text_run, text_checkpoint_saver
from edgetune.trainers.run import PARITY_SAMPLES, RunResult, load_run, load_unmerged

GENERATION_SAMPLES = 32  # val prompts decoded greedily for exact match / chrF
MAX_NEW_TOKENS = 64


def train_instruct(cfg: TrainConfig, out_dir: str | Path, progress: ProgressSink = silent,
                   resume: bool = False) -> RunResult:
    """Instruction-tune a causal LM and write the run directory (see ``run.py``)."""
    if cfg.task != TEXT_GENERATION:
        raise InvalidArgument("task", f"train_instruct does not handle {cfg.task!r}")
    run = begin_run(cfg, out_dir, resume, progress)
    start = prepare_text(run)
    tokenizer, train_rows, val_rows = start.tokenizer, start.train, start.val
    fmt = prompt_format(tokenizer)
    train_pairs, lengths, dropped = encode_pairs(tokenizer, fmt, train_rows.inputs, train_rows.targets,
                                                 cfg.data.max_length)
    val_pairs, _, val_dropped = encode_pairs(tokenizer, fmt, val_rows.inputs, val_rows.targets, cfg.data.max_length)
    add_token_lengths(start.data, lengths, cfg.data.max_length)
    if dropped or val_dropped:
        start.data.warnings.append(f"{dropped + val_dropped} row(s) have no response token left within "
                                   f"max_length {cfg.data.max_length} and are left out")
    if not train_pairs or not val_pairs:
        raise DataError("data.max_length", "no rows keep a response token within max_length; raise it")
    run.log(start.data.summary())

    collate = pad_pairs(tokenizer.pad_token_id)
    train_loader = row_loader(TokenizedRows(*zip(*train_pairs)), cfg.optim.batch_size, collate, run.generator,
                              run.dist,
                              cfg.data.group_by_length)
    val_loader = row_loader(TokenizedRows(*zip(*val_pairs)), get_task(cfg.task).eval_batch, collate)
    n_gen = min(GENERATION_SAMPLES, len(val_rows))
    prompts, references = val_rows.inputs[:n_gen], val_rows.targets[:n_gen]
    max_new = min(MAX_NEW_TOKENS, max(len(tokenizer(r)["input_ids"]) for r in references) + 1)

    def quality(m) -> dict:
        return {**evaluate_loss(m, val_loader, run.setup),
                **generation_metrics(m, tokenizer, fmt, prompts, references, max_new)}

    start.model.to(run.setup.device)
    before = quality(start.model) if not resume else None  # the base model on the same val set
    model, params = apply_text_method(run, start.model)
    model.to(run.setup.device)
    meta = {"task": cfg.task, "arch": cfg.model.arch, "classes": [], "max_length": cfg.data.max_length,
            "method": cfg.method, "weights": start.weights["source"], "prompt_format": fmt,
            "max_new_tokens": max_new, "base": start.base_meta()}
    trains = training_module(run, model)
    trainee = make_trainee(run, model, train_loader, lambda batch, share=None: _loss(trains, batch, run.setup.device),
                           lambda: evaluate_loss(model, val_loader, run.setup), text_checkpoint_saver(run, model, meta),
                           trains=trains)
    if resume:
        state = restore(run, trainee)
    else:
        state = FitState(before=before)
        start_text_run(run, start, [{"prompt": p, "response": r, "row": n} for p, r, n in
                                    list(zip(val_rows.inputs, val_rows.targets, val_rows.rows))[:PARITY_SAMPLES]])
        run.log(f"base model: val loss {before['val_loss']:.4f}, chrF {before['chrf']:.1f}")
    state = fit(run, state, trainee)
    if not run.dist.is_main:
        return follower_result(run, state)

    # Final report on the best checkpoint as saved (prompt tuning needs its virtual tokens: peft).
    best = load_unmerged(run.files.root) if cfg.method == PROMPT_TUNING else load_run(run.files.root).model
    after = quality(best.to(run.setup.device))
    degenerate = []
    if after["distinct_outputs"] == 1 and len(set(references)) > 1:
        degenerate.append(f"greedy outputs are constant: the same text for all {n_gen} val prompts, whose "
                          "references differ")
    report = {"weights": start.weights, **params, "data": start.data.to_dict(), "prompt_format": fmt["kind"],
              "degenerate": degenerate}
    return finish_run(run, state, report, after)


def _loss(model, batch, device):
    loss, _, n = response_loss(model, batch, device)
    return loss, n
