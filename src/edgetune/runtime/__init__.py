"""The device runtime: what runs a bundle, torch-free (numpy, Pillow, tokenizers, onnxruntime).

``load_predictor(bundle)`` verifies a bundle and returns the predictor for its task. Training and
export import the same pixels (``imaging``), prompts (``prompting``) and tokenization (``text``)
from here, so a device computes exactly what the parity gate checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from edgetune.errors import InvalidArgument

from .generation import TextGenerator
from .image import ImagePredictor
from .manifest import manifest_of, verify_bundle
from .scores import Prediction
from .text import TextPredictor

Predictor = Union[ImagePredictor, TextPredictor, TextGenerator]
PREDICTORS: dict[str, type] = {p.task: p for p in (ImagePredictor, TextPredictor, TextGenerator)}

__all__ = ["ImagePredictor", "TextPredictor", "TextGenerator", "Prediction", "Predictor", "PREDICTORS",
           "load_predictor", "manifest_of", "verify_bundle"]


def load_predictor(bundle_dir: str | Path, device: str = "auto", threads: int | None = None,
                   spinning: bool = True, variant: str | None = None) -> Predictor:
    """The predictor for a bundle's task, its hashes verified and its session warm on ``variant``
    (fp32, fp16 or int8; default: the variant the manifest names as its default)."""
    task = manifest_of(bundle_dir).get("task")
    if task not in PREDICTORS:
        raise InvalidArgument("bundle", f"{bundle_dir} is a {task!r} bundle; this runtime knows "
                                        f"{', '.join(PREDICTORS)}")
    return PREDICTORS[task](bundle_dir, device, threads, spinning, variant)
