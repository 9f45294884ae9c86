"""The on-disk layout of a training run, and loading its best checkpoint as a plain model.

RUN/
  config.yaml        resolved TrainConfig
  model.safetensors  best checkpoint (adapters merged; a plain timm or transformers model)
  model.json         what rebuilds it: task, arch, classes, image size / HF config, best metrics
  parity_samples.safetensors  held-out validation images (uint8) for the export parity gate
  parity_samples.json         text runs: held-out validation rows for the export parity gate
  heldout.safetensors / .json validation images (uint8, labels) or rows: the accuracy gates of the
                     export's INT8 and FP16 variants (the whole val set up to HELDOUT_SAMPLES)
  calibration.safetensors     image runs: class-stratified training images (uint8, labels) for
                     INT8 calibration (CALIBRATION_SAMPLES)
  tokenizer/         text runs: the tokenizer files (tokenizer.json, ...)
  adapter/           peft methods: the unmerged adapter (the parity gate checks the merge)
  base.safetensors   peft methods on random-init weights: the base the adapter applies to
  prompt.safetensors prompt tuning: the trained virtual token embeddings
  state/last.pt      resume state (at an epoch end, every checkpoint_every steps, at SIGTERM)
  report.json        written when training ends: data report, per-epoch history, final per-class
                     metrics, confusion matrix, and ``degenerate`` (why the model is unusable, if it is)
  curves.png, confusion.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from edgetune.errors import FailedPrecondition, InvalidArgument, NotFound, WeightsError
from edgetune.integrity import sha256_file
from edgetune.runtime.imaging import Preprocessing
from edgetune.tasks import IMAGE_CLASSIFICATION, PROMPT_TUNING, TEXT_CLASSIFICATION, get_task
from edgetune.trainers.checkpoint import one_line
from edgetune.trainers.config import read_yaml
from edgetune.trainers.models.image import create_model
from edgetune.trainers.models.text import ClassifierLogits, auto_class, build_hf_model, load_tokenizer
from edgetune.trainers.report import format_summary

PARITY_SAMPLES = 64  # held-out validation images kept in a run for the export parity gate
HELDOUT_SAMPLES = 2000  # validation samples kept for the variants' accuracy gates ...
HELDOUT_BYTES = 128 << 20  # ... and at most this many bytes of pixels
CALIBRATION_SAMPLES = 300  # class-stratified training images kept for INT8 calibration


def stratified(labels, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` indices, class-stratified and deterministic: ``labels`` sorted by class (within a
    class in a ``seed``-shuffled order), then ``n`` picked evenly spread, so each class keeps its share."""
    labels = np.asarray(labels)
    if len(labels) <= n:
        return np.arange(len(labels))
    shuffled = np.random.default_rng(seed).permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    return np.sort(order[np.unique(np.linspace(0, len(order) - 1, n).astype(int))])


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
    def heldout(self) -> Path:
        return self.root / "heldout.safetensors"

    @property
    def heldout_texts(self) -> Path:
        return self.root / "heldout.json"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.safetensors"

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


@dataclass
class RunResult:
    """What a recipe returns: where the run is, its best epoch, and its final report."""

    run_dir: Path
    best_epoch: int
    metrics: dict  # final metrics of the best checkpoint on the val set
    report: dict

    def summary(self, paths: bool = True) -> str:
        return format_summary(self.report, paths)


@dataclass(frozen=True)
class RunModel:
    """A run's best checkpoint, rebuilt plain (adapters merged), eval mode, fp32, on the CPU.

    Images: a timm model, with the run's ``preprocessing``. Text classification:
    ``forward(input_ids, attention_mask) -> logits`` (prompt tuning included), with ``tokenizer``.
    Text generation: the HF causal LM itself, with ``tokenizer``.
    """

    model: nn.Module
    task: str
    arch: str
    classes: list[str]
    meta: dict
    preprocessing: Preprocessing | None = None
    tokenizer: object = None


def read_model_meta(run_dir: str | Path) -> dict:
    files = RunFiles(Path(run_dir))
    if not Path(run_dir).is_dir():
        raise NotFound(str(run_dir), "no such run directory")
    if not files.model_meta.is_file() or not files.weights.is_file():
        raise NotFound(str(run_dir), "not a finished run (no model.json / model.safetensors)")
    meta = read_json(files.model_meta)
    if not isinstance(meta, dict):
        raise InvalidArgument(str(files.model_meta), "not a run's model.json (expected a JSON object)")
    meta.setdefault("task", IMAGE_CLASSIFICATION)  # runs from before text tasks
    if not isinstance(meta["task"], str) or not isinstance(meta.get("arch"), str):
        raise InvalidArgument(str(files.model_meta), "not a run's model.json (no task and arch)")
    image = get_task(meta["task"], str(files.model_meta)).modality == "image"
    missing = [k for k in (("classes", "image_size", "preprocessing") if image else ("hf_config",)) if k not in meta]
    if missing:
        raise InvalidArgument(str(files.model_meta), f"not a run's model.json (no {', '.join(missing)})")
    return meta


def read_json(path: Path) -> object:
    """A run file's JSON; InvalidArgument naming the file, in one line, when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except OSError as e:
        reason = e.strerror or one_line(e)
    except ValueError as e:
        reason = f"not JSON: {one_line(e)}"
    except RecursionError:
        reason = "not JSON: nested too deeply"
    raise InvalidArgument(str(path), f"unreadable: {reason}")


def read_tensors(path: Path, numpy: bool = False) -> dict:
    """Every tensor of a run's safetensors file (numpy arrays if ``numpy``); WeightsError naming the
    file when it is not one (a pickled checkpoint is never loaded)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file as load_numpy

    try:
        return (load_numpy if numpy else load_file)(str(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(str(path), f"not a readable safetensors file ({one_line(e)}); pickled checkpoints "
                                      "are never loaded") from None


def load_run(run_dir: str | Path) -> RunModel:
    """Rebuild the best checkpoint of any run (see ``RunModel``)."""
    files = RunFiles(Path(run_dir))
    meta = read_model_meta(run_dir)
    classes = list(meta.get("classes") or [])
    if get_task(meta["task"]).modality == "image":
        model = create_model(meta["arch"], len(classes), meta["image_size"], meta.get("create_kwargs"))
        _load_into(model, files.weights, meta["arch"])
        return RunModel(model.eval(), meta["task"], meta["arch"], classes, meta,
                        preprocessing=Preprocessing.from_dict(meta["preprocessing"]))
    hf = build_hf_model(meta)
    _load_into(hf, files.weights, meta["arch"])
    model: nn.Module = hf.eval()
    if meta["task"] == TEXT_CLASSIFICATION:
        model = ClassifierLogits(hf)
        if meta["method"] == PROMPT_TUNING:
            from edgetune.trainers.methods.prompt_tuning import PromptPrefixed

            model = PromptPrefixed(hf, read_tensors(files.prompt)["prompt"])
    return RunModel(model.eval(), meta["task"], meta["arch"], classes, meta, tokenizer=load_tokenizer(files.tokenizer))


def _load_into(model: nn.Module, path: Path, arch: str) -> None:
    missing, unexpected = model.load_state_dict(read_tensors(path), strict=False)
    # Tied weights (e.g. lm_head = embeddings) may be absent from the file; anything else is an error.
    missing = [k for k in missing if k not in (getattr(model, "all_tied_weights_keys", None) or {})]
    if missing or unexpected:
        raise WeightsError(str(path), f"does not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_unmerged(run_dir: str | Path) -> nn.Module | None:
    """A text run's peft model as trained (base + adapter, not merged); None without an adapter.

    The base comes from the run (random-init runs) or from the recorded local weights, whose
    sha256 must still match what the run was trained on. The export's parity gate compares the
    merged model against this.
    """
    from peft import PeftModel

    files = RunFiles(Path(run_dir))
    meta = read_model_meta(run_dir)
    if not files.adapter.is_dir():
        return None
    classify = meta["task"] == TEXT_CLASSIFICATION
    base = build_hf_model(meta)
    base_info = meta["base"]
    if files.base.is_file():
        _load_into(base, files.base, meta["arch"])
    else:
        path = Path(base_info["path"]) / "model.safetensors"
        if not path.is_file() or sha256_file(path) != base_info.get("sha256"):
            raise WeightsError(str(path), "base weights are missing or changed since training; "
                                          "the adapter cannot be checked against them")
        kwargs = {"num_labels": len(meta["classes"])} if classify else {}
        base = auto_class(meta["task"]).from_pretrained(base_info["path"], local_files_only=True,
                                                        trust_remote_code=False, use_safetensors=True,
                                                        dtype=torch.float32, **kwargs)
    peft_model = PeftModel.from_pretrained(base, str(files.adapter), is_trainable=False).eval()
    return ClassifierLogits(peft_model).eval() if classify else peft_model


def heldout_texts(run_dir: str | Path) -> list[dict]:
    """A text classification run's held-out validation rows for the variants' accuracy gates."""
    path = RunFiles(Path(run_dir)).heldout_texts
    if not path.is_file():
        raise FailedPrecondition("precision", "the run kept no held-out rows for the accuracy "
                                              "gates of FP16 / INT8 variants (trained before edgetune kept them): "
                                              "retrain it, or export fp32 only")
    return read_json(path)


def kept_samples(run_dir: str | Path) -> dict[str, int]:
    """How many held-out samples (and, image runs, calibration images) a run kept for FP16 / INT8
    variants, read from the files' headers; FailedPrecondition when it kept no held-out set."""
    files = RunFiles(Path(run_dir))
    if files.heldout_texts.is_file():
        return {"heldout": len(read_json(files.heldout_texts)), "calibration": 0}
    if not files.heldout.is_file():
        raise FailedPrecondition("precision", "the run kept no held-out data for the accuracy "
                                              "gates of FP16 / INT8 variants (trained before edgetune kept it): "
                                              "retrain it, or export fp32 only")
    from safetensors import SafetensorError, safe_open

    counts = {}
    for key, path in (("heldout", files.heldout), ("calibration", files.calibration)):
        if path.is_file():
            try:
                with safe_open(str(path), "np") as f:
                    counts[key] = f.get_slice("labels").get_shape()[0]
            except (SafetensorError, OSError) as e:
                raise WeightsError(str(path), f"not a readable safetensors file with labels ({one_line(e)})") from None
        else:
            counts[key] = 0
    return counts


def heldout_images(run_dir: str | Path, calibration: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An image run's held-out validation images (or, ``calibration``, its class-stratified training
    images for INT8) as uint8 NHWC pixels and class indices."""
    files = RunFiles(Path(run_dir))
    path = files.calibration if calibration else files.heldout
    if not path.is_file():
        raise FailedPrecondition("precision", f"the run kept no {path.stem} images for FP16 / INT8 "
                                              "variants (trained before edgetune kept them): retrain it, or export "
                                              "fp32 only")
    arrays = read_tensors(path, numpy=True)
    return arrays["pixels"], arrays["labels"].astype(np.int64)


def parity_texts(run_dir: str | Path) -> list[dict]:
    """The held-out validation rows a text run saved for the export parity gate."""
    path = RunFiles(Path(run_dir)).parity_texts
    if not path.is_file():
        raise NotFound(str(run_dir), "run has no parity_samples.json")
    return read_json(path)


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
    epoch = _count(meta.get("epoch"), files.model_meta)
    config = read_yaml(files.config) if files.config.is_file() else None
    optim = config.get("optim") if isinstance(config, dict) else None
    epochs = _count(optim.get("epochs") if isinstance(optim, dict) else None, files.config)
    if not files.report.is_file():
        return RunStatus(epoch, epochs, None, False, [])
    report = read_json(files.report)
    if not isinstance(report, dict) or not isinstance(report.get("history", []), list) \
            or not isinstance(report.get("degenerate", []), list):
        raise InvalidArgument(str(files.report), "not a run's report.json (expected an object with lists "
                                                 "history and degenerate)")
    return RunStatus(epoch, epochs, len(report.get("history", [])), True, list(report.get("degenerate", [])))


def _count(value, path: Path) -> int:
    """An epoch number read from a run file (0 when absent); InvalidArgument naming the file otherwise."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(str(path), f"expected an epoch count, got {str(value)[:40]!r}")
    return value
