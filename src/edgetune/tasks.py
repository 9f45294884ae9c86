"""The one home of task kinds and fine-tuning methods: names, which methods a task takes, defaults.

Light on purpose (no torch, no transformers): the training config, the CLI, the gRPC transport
and the runtime all derive their names and choices from here. A new task or method starts here.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetune.errors import InvalidArgument

IMAGE_CLASSIFICATION = "image_classification"
TEXT_CLASSIFICATION = "text_classification"
TEXT_GENERATION = "text_generation"

FULL = "full"
LINEAR_PROBE = "linear_probe"
LORA = "lora"
IA3 = "ia3"
PROMPT_TUNING = "prompt_tuning"
METHODS = (FULL, LINEAR_PROBE, LORA, IA3, PROMPT_TUNING)
PEFT_METHODS = (LORA, IA3, PROMPT_TUNING)  # train an adapter that the export's parity gate checks

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Task:
    """One task kind and its defaults.

    Attributes:
        modality: "image" or "text" (which data reader and model registry serve it).
        methods: the methods it supports (linear probing needs a classifier head; IA3 and prompt
            tuning are peft methods for transformers).
        method_defaults: lr, weight_decay and epochs per method; any of them can be overridden.
        metric: the validation metric that picks the best checkpoint and drives early stopping.
        eval_batch: validation batch size (decoders evaluate long sequences: smaller).
    """

    name: str
    modality: str
    methods: tuple[str, ...]
    default_arch: str
    method_defaults: dict[str, dict]
    metric: str
    label_smoothing: float
    eval_batch: int
    summary: str

    @property
    def classifies(self) -> bool:
        return self.name != TEXT_GENERATION


# Transformers want smaller steps and fewer epochs than timm models; no label smoothing for text.
_TEXT_DEFAULTS = {
    FULL: {"lr": 5e-5, "weight_decay": 0.01, "epochs": 3},
    LINEAR_PROBE: {"lr": 1e-3, "weight_decay": 0.0, "epochs": 3},
    LORA: {"lr": 1e-3, "weight_decay": 0.01, "epochs": 3},
    IA3: {"lr": 3e-3, "weight_decay": 0.0, "epochs": 3},
    PROMPT_TUNING: {"lr": 3e-2, "weight_decay": 0.0, "epochs": 3},
}

TASKS: dict[str, Task] = {
    IMAGE_CLASSIFICATION: Task(
        IMAGE_CLASSIFICATION, "image", (FULL, LINEAR_PROBE, LORA), "efficientnet_lite0",
        {FULL: {"lr": 1e-3, "weight_decay": 0.05, "epochs": 5},
         LINEAR_PROBE: {"lr": 1e-2, "weight_decay": 0.0, "epochs": 5},
         LORA: {"lr": 2e-3, "weight_decay": 0.01, "epochs": 5}},
        "val_macro_f1", 0.1, 128, "timm image classifier on an ImageFolder, archive or CSV"),
    TEXT_CLASSIFICATION: Task(
        TEXT_CLASSIFICATION, "text", METHODS, "bert", _TEXT_DEFAULTS, "val_macro_f1", 0.0, 64,
        "transformers encoder on (text, label) rows"),
    TEXT_GENERATION: Task(
        TEXT_GENERATION, "text", (FULL, LORA, IA3, PROMPT_TUNING), "llama",
        {m: d for m, d in _TEXT_DEFAULTS.items() if m != LINEAR_PROBE}, "val_loss", 0.0, 16,
        "instruction tuning of a causal LM on (prompt, response) rows"),
}


def get_task(name: str, field: str = "task") -> Task:
    if name not in TASKS:
        raise InvalidArgument(field, f"must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]
