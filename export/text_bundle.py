"""Text classification bundles: ONNX export with dynamic batch and sequence axes, the tokenizer,
and the three-way parity gate.

Three parties are compared on every held-out validation row (tokenized as a device will, through
``TextEncoder``, which must give the ids training gave) and on random token ids at several lengths:

  peft model, unmerged (base + adapter)  <->  merged PyTorch  <->  ONNX Runtime

Every pair follows ``parity.py``'s rules: values within the spec's tolerance, and on held-out
rows the same label wherever the reference's top-2 gap is a decision. Full fine-tunes and linear
probes have no adapter: two parties.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import edgetune
from edgetune.errors import FailedPrecondition
from edgetune.trainers.data.tokenize import encode
from edgetune.trainers.run import heldout_texts, load_run, load_unmerged, parity_texts

from .onnx_export import export_onnx, metadata_problems
from .parity import (Feed, ParityReport, batches_of, compare, label_problems, ort_runner, raise_unless_passed,
                     torch_runner)
from edgetune.runtime.sessions import create_session
from .specs import FP32, ExportSpec
from .variants import HELDOUT_BATCH, LATENCY_BATCHES, HeldOut, VariantInputs
from edgetune.runtime.text import TextEncoder, classifier_tokenization

PARITY_LENGTHS = (2, 7)  # random-token cases, besides max_length


def align_tokenizer_files(folder: Path, tokenization: dict) -> None:
    """Make the bundle's tokenizer files say what the manifest says: truncation at ``max_length``
    (special tokens counted), right padding with ``pad_token_id``, ``model_max_length``."""
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text())
    spec["truncation"] = {"direction": "Right", "max_length": tokenization["max_length"], "strategy": "LongestFirst",
                          "stride": 0}
    pad = tokenization["padding"]
    spec["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": pad["pad_token_id"], "pad_type_id": 0,
                       "pad_token": tokenization["special_tokens"].get("pad_token", "")}
    path.write_text(json.dumps(spec, ensure_ascii=False))
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["model_max_length"] = tokenization["max_length"]
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2))


def _random_feeds(vocab: int, lengths: list[int], batch: int, seed: int = 0) -> list[Feed]:
    """Random token ids; each batch has rows padded to different lengths (mask 0 on the tail)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for length in lengths:
        ids = rng.integers(0, vocab, (batch, length), dtype=np.int64)
        mask = np.ones((batch, length), dtype=np.int64)
        for r in range(1, batch):
            mask[r, max(1, length - r * length // batch):] = 0
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def text_classifier_contents(run_dir: Path, folder: Path, spec: ExportSpec, device: str, source: str
                             ) -> tuple[dict, Callable[[], ParityReport], Callable[[], VariantInputs]]:
    """Write model.onnx and tokenizer/ into ``folder``; return manifest fields, the parity gate and
    what the INT8 / FP16 variants are gated and timed on."""
    run = load_run(run_dir)
    shutil.copytree(Path(run_dir) / "tokenizer", folder / "tokenizer")
    max_length = int(run.meta["max_length"])
    try:
        tokenization = classifier_tokenization(run.tokenizer, max_length)
    except ValueError as e:
        raise FailedPrecondition("tokenizer", str(e)) from None
    align_tokenizer_files(folder / "tokenizer", tokenization)
    encoder = TextEncoder(folder, tokenization)
    rows = parity_texts(run_dir)
    texts = [r["text"] for r in rows]
    sample = encoder.encode(texts[:2] if len(texts) >= 2 else texts * 2)
    if sample["input_ids"].shape[1] < 2:  # the sequence axis must not be specialised to 1
        sample = _random_feeds(len(run.tokenizer), [4], 2)[0]
    metadata = {"edgetune.task": spec.task, "edgetune.labels": run.classes, "edgetune.tokenization": tokenization,
                "edgetune.source_run": source, "edgetune.version": edgetune.__version__}
    model_path = export_onnx(run.model, tuple(torch.from_numpy(sample[n]) for n in spec.input_names), spec,
                             folder / "model.onnx", metadata, dim_max={"sequence": max_length})
    session = create_session(model_path, device)
    fields = text_classifier_fields(run, spec, tokenization)
    unmerged = load_unmerged(run_dir)

    def check() -> ParityReport:
        tolerance = spec.tolerance(FP32)
        merged, ort = torch_runner(run.model, spec.input_names), ort_runner(session, spec)
        big = spec.large_batch
        one = [encoder.encode(b) for b in batches_of(texts, 1)]
        batched = [encoder.encode(b) for b in batches_of(texts, big)]
        random = _random_feeds(len(run.tokenizer), [*PARITY_LENGTHS, max_length], 4)
        written = json.loads(json.dumps(fields))  # the manifest as a device reads it
        labels = (run.classes, written["labels"])
        report = ParityReport(FP32, tolerance, session.get_providers())
        report.problems += metadata_problems(model_path, {"labels": written["labels"],
                                                          "tokenization": written["tokenization"]})
        report.problems += label_problems(run.classes, written["labels"])
        trained_ids, _ = encode(run.tokenizer, texts, max_length)
        differ = [r["row"] for r, ids, device_ids in zip(rows, trained_ids, encoder.ids(texts)) if ids != device_ids]
        if differ:
            report.problems.append(f"device tokenization differs from training's on {len(differ)} of {len(rows)} "
                                   f"held-out rows (first: row {differ[0]})")
        report.cases += [
            compare("held-out rows, batch 1", merged, ort, one, tolerance, labels, ("merged pytorch", "onnxruntime")),
            compare(f"held-out rows, batch {big} (padded)", merged, ort, batched, tolerance, labels,
                    ("merged pytorch", "onnxruntime")),
            compare(f"random token ids, lengths {[*PARITY_LENGTHS, max_length]} (padded)", merged, ort, random,
                    tolerance, parties=("merged pytorch", "onnxruntime")),
        ]
        if unmerged is not None:
            peft = torch_runner(unmerged, spec.input_names)
            same = (run.classes, run.classes)
            report.cases += [
                compare("held-out rows, batch 1", peft, merged, one, tolerance, same, ("peft unmerged", "merged pytorch")),
                compare(f"held-out rows, batch {big} (padded)", peft, merged, batched, tolerance, same,
                        ("peft unmerged", "merged pytorch")),
                compare("held-out rows, batch 1", peft, ort, one, tolerance, labels, ("peft unmerged", "onnxruntime")),
                compare(f"held-out rows, batch {big} (padded)", peft, ort, batched, tolerance, labels,
                        ("peft unmerged", "onnxruntime")),
            ]
        return raise_unless_passed(report)

    def variant_inputs(precisions: list[str]) -> VariantInputs:
        rows = heldout_texts(run_dir)
        index = {c: i for i, c in enumerate(run.classes)}
        texts = [r["text"] for r in rows]
        batches = batches_of(texts, HELDOUT_BATCH)
        heldout = HeldOut([encoder.encode(b) for b in batches], np.array([index[r["label"]] for r in rows]))
        timing = {b: encoder.encode((texts * b)[:b]) for b in LATENCY_BATCHES}
        return VariantInputs(heldout, timing, None)

    return fields, check, variant_inputs


def text_classifier_fields(run, spec: ExportSpec, tokenization: dict) -> dict:
    """A text classification bundle's manifest fields: labels, tokenization, input and output shapes."""
    return {
        "labels": run.classes, "tokenization": tokenization,
        "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in spec.input_names],
        "outputs": [{"name": spec.outputs[0], "dtype": "float32", "shape": ["batch", len(run.classes)]}],
    }
