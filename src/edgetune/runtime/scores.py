"""From a classifier's logits to what a caller reads: probabilities and the top-k labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgetune.errors import InvalidArgument

Top = list[tuple[str, float]]  # (label, probability), best first


@dataclass
class Prediction:
    source: str  # the image file or the text this prediction is for
    top: Top


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise InvalidArgument("top_k", f"must be >= 1, got {top_k}")


def top_labels(logits: np.ndarray, labels: list[str], top_k: int) -> list[Top]:
    """Per row of ``logits`` ([batch, classes]): the ``top_k`` most probable labels (softmax)."""
    out = []
    for row in softmax(logits):
        idx = np.argsort(-row, kind="stable")[:top_k]
        out.append([(labels[j], float(row[j])) for j in idx])
    return out
