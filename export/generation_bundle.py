"""Text generation bundles: a causal LM exported with a KV cache, its tokenizer and prompt format,
gated on greedy parity.

On every held-out val prompt of the run (wrapped and tokenized by the device code), greedy
generation in ONNX Runtime must follow PyTorch (``decoder.check_generation_parity``: logits
within the spec's tolerance, the same token wherever PyTorch's choice is not a tie), against the
merged model and, for peft methods, the unmerged peft model too.
Prompt tuning cannot be merged: the bundle carries the virtual tokens' keys and values
(``prompt_past.safetensors``) that every sequence starts from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer

import edgetune
from edgetune.errors import ParityError
from edgetune.runtime.prompting import encode_prompt
from edgetune.tasks import PROMPT_TUNING
from edgetune.trainers.checkpoint import save_numpy
from edgetune.trainers.generation import prompt_ids
from edgetune.trainers.run import load_run, load_unmerged, parity_texts

from .decoder import check_generation_parity, export_decoder, prompt_prefix_past
from .onnx_export import metadata_problems
from .parity import ParityReport, raise_unless_passed
from edgetune.runtime.sessions import create_session
from .specs import FP32, ExportSpec
from edgetune.runtime.text import tokenization_of

PROMPT_PAST = "prompt_past.safetensors"


def text_generator_contents(run_dir: Path, folder: Path, spec: ExportSpec, device: str, source: str
                            ) -> tuple[dict, Callable[[], ParityReport]]:
    """Write model.onnx, tokenizer/ (and prompt_past for prompt tuning); return manifest fields and the gate."""
    run = load_run(run_dir)
    unmerged = load_unmerged(run_dir)
    shutil.copytree(Path(run_dir) / "tokenizer", folder / "tokenizer")
    fmt = run.meta["prompt_format"]
    tokenization = tokenization_of(run.tokenizer, int(run.meta["max_length"]))
    metadata = {"edgetune.task": spec.task, "edgetune.tokenization": tokenization, "edgetune.prompt_format": fmt,
                "edgetune.source_run": source, "edgetune.version": edgetune.__version__}
    io = export_decoder(run.model, folder / "model.onnx", spec.opset, metadata)
    initial_past = None
    if run.meta["method"] == PROMPT_TUNING:
        initial_past = prompt_prefix_past(unmerged)
        save_numpy(folder / PROMPT_PAST, {f"past.{i}": a for i, a in enumerate(initial_past)})
    session = create_session(folder / "model.onnx", device)
    eos = run.tokenizer.eos_token_id
    max_new = int(run.meta.get("max_new_tokens", 32))
    config = run.model.config
    max_positions = int(getattr(config, "max_position_embeddings", None) or config.n_positions)
    fields = {
        "tokenization": tokenization, "prompt_format": fmt,
        "generation": {"eos_token_id": eos, "max_new_tokens": max_new, "max_positions": max_positions,
                       "decoder_io": io.to_dict(),
                       "prompt_past": PROMPT_PAST if initial_past is not None else None},
        "inputs": [{"name": n, "dtype": "int64" if n in (io.input_ids, io.attention_mask, io.position_ids)
                    else io.dtype} for n in io.input_names],
        "outputs": [{"name": n, "dtype": io.dtype} for n in io.output_names],
    }
    rows = parity_texts(run_dir)

    def check() -> ParityReport:
        tolerance = spec.tolerance(FP32)
        report = ParityReport(FP32, tolerance, session.get_providers())
        # The gate's prompts are wrapped and tokenized by the device code from the bundle's own
        # files and the manifest as written, and must equal what training fed the model.
        written = json.loads(json.dumps(fields))
        report.problems += metadata_problems(folder / "model.onnx", {"tokenization": written["tokenization"],
                                                                     "prompt_format": written["prompt_format"]})
        device_tokenizer = Tokenizer.from_file(str(folder / written["tokenization"]["file"]))
        prompts = [encode_prompt(device_tokenizer, written["prompt_format"], r["prompt"]) for r in rows]
        differ = [r["row"] for r, ids in zip(rows, prompts) if ids != prompt_ids(run.tokenizer, fmt, r["prompt"])]
        if differ:
            report.problems.append(f"device tokenization differs from training's on {len(differ)} of {len(rows)} "
                                   f"held-out prompts (first: row {differ[0]})")
        references = []
        if initial_past is None:  # prompt tuning's only faithful reference is the peft model itself
            references.append(("merged pytorch", run.model))
        if unmerged is not None:
            references.append(("peft unmerged", unmerged))
        for name, model in references:
            try:
                part = check_generation_parity(model, session, io, prompts, max_new, eos, tolerance, initial_past,
                                               spec.large_batch, name, FP32)
            except ParityError as e:
                if e.report is None:  # e.g. an output shape that differs: no values to compare
                    raise
                part = e.report
            report.cases += part.cases
            report.problems += part.problems
        return raise_unless_passed(report)

    return fields, check, None  # fp32 only: no INT8 / FP16 variants of decoders yet
