"""One typed training config: dataclasses with checks in ``__post_init__``, YAML and overrides.

Precedence: method defaults < YAML file < ``--set section.field=value`` / CLI flags.
The resolved config is saved in every run as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from edgetune.errors import InvalidArgument, NotFound
from edgetune.tasks import DEVICES, IMAGE_CLASSIFICATION, TEXT_GENERATION, get_task
from edgetune.trainers.models.registry import check_image_size
from edgetune.trainers.models.registry import get_text_arch

CACHE_MODES = ("auto", "disk", "off")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
METRICS = ("val_macro_f1", "val_accuracy", "val_loss")
# Documented maxima (docs/api.md "Hyperparameters"): a request beyond them is refused, never
# clamped. Floats must be finite everywhere (NaN and infinity are refused when coerced).
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096
MAX_IMAGE_SIZE = 1024
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
MAX_PATIENCE = 1000
MAX_SEED = 2**32 - 1


def _require(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise InvalidArgument(name, msg)


@dataclass
class DataConfig:
    """Where the data comes from and how it is prepared.

    Images: an ImageFolder directory, a .zip / .tar.gz of one, or a CSV manifest (path,label).
    Text: a .jsonl, .csv or .tsv file of (text, label) or (prompt, response) rows.
    """

    path: str = ""
    val_path: str | None = None  # explicit validation set; otherwise a stratified split of `path`
    val_fraction: float = 0.2
    image_size: int = 224
    augment: bool = True  # random resized crop + small colour jitter on training images
    hflip: bool = False  # horizontal flips (off by default: wrong for digits and text)
    skip_corrupt: bool = False  # skip unreadable images / invalid text rows instead of failing the run
    max_length: int = 128  # text: tokens per example (longer rows are truncated and counted)
    group_by_length: bool = False  # text: batches of rows of similar length (less padding; see data/sampling.py)
    text_field: str = "text"  # text classification columns
    label_field: str = "label"
    prompt_field: str = "prompt"  # instruction tuning columns
    response_field: str = "response"
    cache: str = "auto"  # images: decoded pixels on disk ("auto": when they fit; "disk"; "off": decode per batch)
    workers: int | None = None  # loader worker processes; default from the cores (0 reads in the training process)

    def __post_init__(self):
        _require(0.0 < self.val_fraction < 0.9, "data.val_fraction", f"must be in (0, 0.9), got {self.val_fraction}")
        _require(16 <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size",
                 f"must be in [16, {MAX_IMAGE_SIZE}], got {self.image_size}")
        _require(8 <= self.max_length <= 8192, "data.max_length", f"must be in [8, 8192], got {self.max_length}")
        for name in ("text_field", "label_field", "prompt_field", "response_field"):
            _require(bool(getattr(self, name)), f"data.{name}", "must not be empty")
        _require(self.cache in CACHE_MODES, "data.cache", f"must be one of {CACHE_MODES}, got {self.cache!r}")
        _require(self.workers is None or 0 <= self.workers <= 64, "data.workers", "must be in [0, 64]")


@dataclass
class ModelConfig:
    """Which architecture and which local base weights."""

    arch: str = ""  # empty: the task's default (efficientnet_lite0, bert, llama)
    weights: str = "catalog"  # "catalog", "random", a catalog entry name, or a weights file/dir
    init_from: str | None = None  # an earlier run to re-tune (same labels)

    def __post_init__(self):
        _require(bool(self.weights), "model.weights", "must not be empty")


@dataclass
class LoraSettings:
    """LoRA adapter settings (method=lora); targets come from the architecture registry."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0

    def __post_init__(self):
        _require(self.r >= 1, "lora.r", f"must be >= 1, got {self.r}")
        _require(self.alpha > 0, "lora.alpha", f"must be > 0, got {self.alpha}")
        _require(0.0 <= self.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class PromptSettings:
    """Prompt tuning (method=prompt_tuning): trainable virtual tokens prepended to every input."""

    virtual_tokens: int = 16

    def __post_init__(self):
        _require(1 <= self.virtual_tokens <= 512, "prompt.virtual_tokens",
                 f"must be in [1, 512], got {self.virtual_tokens}")


@dataclass
class OptimConfig:
    """Optimisation; ``None`` fields take the method's default."""

    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9  # SGD only
    batch_size: int = 32
    epochs: int | None = None
    warmup_epochs: float = 0.5  # linear warmup, then the schedule
    schedule: str = "cosine"
    label_smoothing: float | None = None  # default: the task's (0.1 for images, 0 for text)
    grad_accum: int = 1
    early_stopping_patience: int = 0  # epochs without improvement before stopping; 0 = off
    metric: str | None = None  # picks the best checkpoint, drives early stopping; default val_macro_f1
    # (val_loss for text generation)

    def __post_init__(self):
        _require(self.optimizer in OPTIMIZERS, "optim.optimizer", f"must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _require(self.lr is None or 0 < self.lr <= MAX_LR, "optim.lr", f"must be in (0, {MAX_LR}], got {self.lr}")
        _require(self.weight_decay is None or 0 <= self.weight_decay <= MAX_WEIGHT_DECAY, "optim.weight_decay",
                 f"must be in [0, {MAX_WEIGHT_DECAY}], got {self.weight_decay}")
        _require(0.0 <= self.momentum < 1.0, "optim.momentum", f"must be in [0, 1), got {self.momentum}")
        _require(1 <= self.batch_size <= MAX_BATCH_SIZE, "optim.batch_size",
                 f"must be in [1, {MAX_BATCH_SIZE}], got {self.batch_size}")
        _require(self.epochs is None or 1 <= self.epochs <= MAX_EPOCHS, "optim.epochs",
                 f"must be in [1, {MAX_EPOCHS}], got {self.epochs}")
        _require(0 <= self.warmup_epochs <= MAX_EPOCHS, "optim.warmup_epochs", f"must be in [0, {MAX_EPOCHS}]")
        _require(self.schedule in SCHEDULES, "optim.schedule", f"must be one of {SCHEDULES}")
        _require(self.label_smoothing is None or 0.0 <= self.label_smoothing < 1.0, "optim.label_smoothing",
                 "must be in [0, 1)")
        _require(1 <= self.grad_accum <= 1024, "optim.grad_accum", f"must be in [1, 1024], got {self.grad_accum}")
        _require(0 <= self.early_stopping_patience <= MAX_PATIENCE, "optim.early_stopping_patience",
                 f"must be in [0, {MAX_PATIENCE}]")
        _require(self.metric is None or self.metric in METRICS, "optim.metric", f"must be one of {METRICS}")


@dataclass
class TrainConfig:
    """Everything one fine-tuning run needs (image or text)."""

    task: str = IMAGE_CLASSIFICATION
    method: str = "full"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200  # optimizer steps between mid-epoch resume checkpoints; 0: at epoch ends only
    log_every: int = 10  # steps between progress events (each reads the loss: one device sync)
    compile: bool = False  # torch.compile the training forward (a minute of compiling; faster steps on GPU)

    def __post_init__(self):
        task = get_task(self.task)
        _require(0 <= self.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}], got {self.seed}")
        _require(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        _require(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _require(self.method in task.methods, "method",
                 f"{self.task} supports {', '.join(task.methods)}, got {self.method!r}")
        _require(self.device in DEVICES, "device", f"must be one of {DEVICES}, got {self.device!r}")
        self.model.arch = self.model.arch or task.default_arch
        if task.modality == "image":
            check_image_size(self.model.arch, self.data.image_size)
        else:
            get_text_arch(self.model.arch, self.task)
            _require(not self.model.init_from, "model.init_from",
                     "re-tuning an earlier run is supported for image classification only")
        if self.optim.metric is None:
            self.optim.metric = task.metric
        _require(self.task != TEXT_GENERATION or self.optim.metric == "val_loss", "optim.metric",
                 "text generation selects its best checkpoint by val_loss")
        if self.optim.label_smoothing is None:
            self.optim.label_smoothing = task.label_smoothing
        for name, value in task.method_defaults[self.method].items():
            if getattr(self.optim, name) is None:
                setattr(self.optim, name, value)

    def check_paths(self) -> None:
        """Raise NotFound for a data or run path that does not exist (cheap: callers check before
        loading a framework)."""
        for name, value in (("data.path", self.data.path), ("data.val_path", self.data.val_path),
                            ("model.init_from", self.model.init_from)):
            if value and not Path(value).exists():
                raise NotFound(name, f"{value} does not exist")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value, tp, name: str):
    """Convert a YAML/CLI value to the annotated field type, naming the field on failure."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], name)
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise InvalidArgument(name, f"expected {'a finite ' if tp is float else ''}{tp.__name__}, "
                                    f"got {str(value)[:40]!r}") from None
    return value


def _build(cls, values: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        fields = {f.name for f in dataclasses.fields(cls)}
        if key not in fields:
            raise InvalidArgument(name, f"unknown setting; known: {', '.join(sorted(fields))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise InvalidArgument(name, "expected a mapping")
            kwargs[key] = _build(tp, value, f"{name}.")
        else:
            kwargs[key] = _coerce(value, tp, name)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InvalidArgument(dotted, "is not a section")
    node[parts[-1]] = value


def read_yaml(path: str | Path, subject: str | None = None) -> object:
    """A YAML file's plain data (``yaml.safe_load``: no Python tags, nothing constructed or run).

    Raises InvalidArgument (``subject``, default the file) with a one-line reason when the file
    cannot be read or is not plain YAML.
    """
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        reason = e.strerror or str(e)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        reason = f"not plain YAML: {e.problem or e.context or type(e).__name__}{where}"
    except yaml.YAMLError as e:
        reason = f"not plain YAML: {' '.join(str(e).split())}"
    except RecursionError:
        reason = "nested too deeply"
    raise InvalidArgument(subject or str(path), f"cannot read {path}: {reason}" if subject else reason)


def load_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """Build a validated TrainConfig from an optional YAML file and dotted overrides.

    Args:
        yaml_path: a YAML file with the same sections as TrainConfig.
        overrides: ``{"optim.lr": "0.01", ...}``; values may be strings (coerced by field type).
    """
    tree: dict = {}
    if yaml_path:
        tree = read_yaml(yaml_path, "config") or {}
        if not isinstance(tree, dict):
            raise InvalidArgument("config", f"{yaml_path} must hold a mapping")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    return _build(TrainConfig, tree, "")


def config_from_dict(d: dict) -> TrainConfig:
    """Rebuild a saved (resolved) config."""
    return _build(TrainConfig, d, "")


def read_saved_config(path: str | Path) -> TrainConfig:
    """A run's saved ``config.yaml``; InvalidArgument naming the file when it is not one."""
    tree = read_yaml(path)
    if not isinstance(tree, dict):
        raise InvalidArgument(str(path), "not a saved config (expected a mapping)")
    return config_from_dict(tree)
