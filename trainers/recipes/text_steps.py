"""Steps both text recipes take (not a recipe): rows and model, the run folder, the checkpoint saver."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from edgetune.tasks import PEFT_METHODS, PROMPT_TUNING, TEXT_CLASSIFICATION
from edgetune.trainers import checkpoint as ckpt
from edgetune.trainers.data.report import DataReport
from edgetune.trainers.data.texts import TextFields, TextRows, load_text_data
from edgetune.trainers.fit import RunContext
from edgetune.trainers.methods import apply_method, plain_model, trainable_parameters
from edgetune.trainers.methods.prompt_tuning import prompt_embeddings
from edgetune.trainers.models.text import check_positions, create_text_model, load_tokenizer
from edgetune.trainers.models.weights import WeightsSource, resolve_weights


@dataclass
class TextStart:
    """What a text run starts from: split rows, their report, the base model and its tokenizer."""

    train: TextRows
    val: TextRows
    data: DataReport
    source: WeightsSource
    model: nn.Module
    tokenizer: object
    weights: dict  # the report's weights section
    base_state: dict | None  # a random-init base, kept for the adapter's parity check

    def base_meta(self) -> dict:
        return {"kind": self.source.kind, "path": self.source.path, "sha256": self.weights.get("sha256")}


def prepare_text(run: RunContext) -> TextStart:
    """Rows (read, validated, split before anything expensive), then the model and its tokenizer
    from local weights. A resumed run keeps its saved tokenizer."""
    cfg, files = run.cfg, run.files
    fields = TextFields(cfg.data.text_field, cfg.data.label_field, cfg.data.prompt_field, cfg.data.response_field)
    train, val, report = load_text_data(cfg.data.path, cfg.data.val_path, cfg.task, cfg.data.val_fraction,
                                        cfg.data.skip_corrupt, cfg.seed, fields)
    source = resolve_weights(cfg.model.arch, cfg.model.weights)
    saved_tokenizer = load_tokenizer(files.tokenizer) if run.resume and files.tokenizer.is_dir() else None
    # A random-init tokenizer learns from what the model will read: texts, or prompts and responses.
    corpus = train.inputs if cfg.task == TEXT_CLASSIFICATION else train.inputs + train.targets
    model, tokenizer, weights = create_text_model(cfg.task, cfg.model.arch, source, len(report.classes), cfg.seed,
                                                  corpus, saved_tokenizer)
    if run.dist.rank:  # model creation seeded torch with the run's seed: processes draw their own dropout
        torch.manual_seed(cfg.seed + run.dist.rank)
    check_positions(model, cfg.data.max_length, cfg.prompt.virtual_tokens if cfg.method == PROMPT_TUNING else 0)
    run.log(f"weights: {weights['source']}")
    base_state = {k: v.clone() for k, v in model.state_dict().items()} if source.kind == "random" else None
    return TextStart(train, val, report, source, model, tokenizer, weights, base_state)


def apply_text_method(run: RunContext, model: nn.Module) -> tuple[nn.Module, dict]:
    """The method applied, its parameter counts logged; returns the model and the report's counts."""
    model = apply_method(model, run.cfg)
    trainable, total = trainable_parameters(model)
    run.log(f"method {run.cfg.method}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
    return model, {"trainable_params": trainable, "total_params": total}


def start_text_run(run: RunContext, start: TextStart, parity_rows: list[dict],
                   heldout_rows: list[dict] | None = None) -> None:
    """Create the run folder (only once set-up succeeded): config, tokenizer, the random-init
    base a peft adapter applies to, the held-out rows the export's parity gate uses and, for
    classifiers, those its variants' accuracy gates use."""
    cfg, files = run.cfg, run.files
    if not run.dist.is_main:
        return
    files.root.mkdir(parents=True, exist_ok=True)
    cfg.save(files.config)
    start.tokenizer.save_pretrained(str(files.tokenizer))
    if start.base_state is not None and cfg.method in PEFT_METHODS:
        ckpt.save_weights(files.base, start.base_state)
    ckpt.save_json(files.parity_texts, parity_rows)
    if heldout_rows is not None:
        ckpt.save_json(files.heldout_texts, heldout_rows)


def text_checkpoint_saver(run: RunContext, model: nn.Module, meta: dict):
    """``save_best`` for text runs: the plain (merged) model, and for peft methods the adapter
    (and prompt tuning's virtual tokens) so the export can check the merge."""
    cfg, files = run.cfg, run.files

    def save_best(epoch: int, metrics: dict) -> None:
        plain = plain_model(model)
        ckpt.save_weights(files.weights, plain.state_dict(), {"arch": cfg.model.arch})
        if cfg.method == PROMPT_TUNING:
            ckpt.save_weights(files.prompt, {"prompt": prompt_embeddings(model)})
        if cfg.method in PEFT_METHODS:
            model.save_pretrained(str(files.adapter))
        ckpt.save_json(files.model_meta, {**meta, "hf_config": plain.config.to_dict(), "epoch": epoch,
                                          "metrics": metrics})

    return save_best
