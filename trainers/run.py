"""The on-disk layout of a training run, and loading its best checkpoint as a plain model.

RUN/
  config.yaml        resolved TrainConfig
  model.safetensors  best checkpoint (adapters merged; a plain timm or transformers model)
  model.json         what rebuilds it: task, arch, classes, image size / HF config, best metrics
  parity_samples.safetensors  held-out validation images (uint8) for the export parity gate
  parity_samples.json         text runs: held-out validation rows for the export parity gate
  tokenizer/         text runs: the tokenizer files (tokenizer.json, ...)
  adapter/           peft methods: the unmerged adapter (the parity gate checks the merge)
  base.safetensors   peft methods on random-init weights: the base the adapter applies to
  prompt.safetensors prompt tuning: the trained virtual token embeddings
  state/last.pt      resume state after the last finished epoch
  report.json        data report, per-epoch history, final per-class metrics, confusion matrix
  curves.png, confusion.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_file

from edgetune.errors import NotFound, WeightsError
from edgetune.imaging import Preprocessing

from .architectures import create_model

PARITY_SAMPLES = 64  # held-out validation images kept in a run for the export parity gate


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def model_meta(self) -> Path:
        return self.root / "model.json"

    @property
    def state(self) -> Path:
        return self.root / "state" / "last.pt"

    @property
    def parity_samples(self) -> Path:
        return self.root / "parity_samples.safetensors"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def parity_texts(self) -> Path:
        return self.root / "parity_samples.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def base(self) -> Path:
        return self.root / "base.safetensors"

    @property
    def prompt(self) -> Path:
        return self.root / "prompt.safetensors"


@dataclass(frozen=True)
class RunModel:
    """A run's best checkpoint, rebuilt: the eval-mode model and what it needs to run."""

    model: nn.Module
    arch: str
    classes: list[str]
    preprocessing: Preprocessing
    meta: dict


def read_model_meta(run_dir: str | Path) -> dict:
    files = RunFiles(Path(run_dir))
    if not files.model_meta.is_file() or not files.weights.is_file():
        raise NotFound(str(run_dir), "not a finished run (no model.json / model.safetensors)")
    return json.loads(files.model_meta.read_text())


def load_run_model(run_dir: str | Path) -> RunModel:
    """Rebuild the best checkpoint of a run as an eval-mode timm model on the CPU."""
    files = RunFiles(Path(run_dir))
    meta = read_model_meta(run_dir)
    model = create_model(meta["arch"], len(meta["classes"]), meta["image_size"], meta.get("create_kwargs"))
    state = load_file(str(files.weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(str(files.weights), f"does not fit {meta['arch']}: missing {missing[:3]}, "
                                               f"unexpected {unexpected[:3]}")
    model.eval()
    return RunModel(model, meta["arch"], list(meta["classes"]),
                    Preprocessing.from_dict(meta["preprocessing"]), meta)
