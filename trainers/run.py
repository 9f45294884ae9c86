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
  report.json        written when training ends: data report, per-epoch history, final per-class
                     metrics, confusion matrix, and ``degenerate`` (why the model is unusable, if it is)
  curves.png, confusion.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
import yaml
from safetensors.torch import load_file

from edgetune.errors import NotFound, WeightsError
from edgetune.runtime.imaging import Preprocessing

from edgetune.trainers.models.image import create_model

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


@dataclass(frozen=True)
class RunStatus:
    """Where a run's training stands, as an export sees it."""

    epoch: int  # epoch of the best checkpoint (what an export takes)
    epochs: int  # epochs the config asks for
    epochs_trained: int | None  # epochs run, once finished (early stopping may end sooner)
    finished: bool
    degenerate: list[str]  # why the final model is unusable; empty when it is not flagged

    @property
    def unfinished(self) -> bool:
        return not self.finished

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "epochs": self.epochs, "epochs_trained": self.epochs_trained,
                "finished": self.finished, "degenerate": list(self.degenerate)}


def run_status(run_dir: str | Path) -> RunStatus:
    """Finished means the final report was written (the last step of every recipe)."""
    files = RunFiles(Path(run_dir))
    meta = read_model_meta(run_dir)
    epochs = 0
    if files.config.is_file():
        epochs = int(((yaml.safe_load(files.config.read_text()) or {}).get("optim") or {}).get("epochs") or 0)
    if not files.report.is_file():
        return RunStatus(int(meta.get("epoch") or 0), epochs, None, False, [])
    report = json.loads(files.report.read_text())
    return RunStatus(int(meta.get("epoch") or 0), epochs, len(report.get("history", [])), True,
                     list(report.get("degenerate", [])))
