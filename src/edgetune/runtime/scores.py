"""From a classifier's logits to what a caller reads: probabilities and the top-k labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgetune.errors import InvalidArgument

Top = list[tuple[str, float]]  # (label, probability), best first


@dataclass
class Prediction:
    source: str  # the image file or the text this prediction is for
    top: Top
    indices: list[int] = field(default_factory=list)  # the class index of each of ``top``
    logits: list[float] = field(default_factory=list)  # the model's raw output, one per class


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise InvalidArgument("top_k", f"must be >= 1, got {top_k}")


def predictions(sources: list[str], logits: np.ndarray, labels: list[str], top_k: int) -> list[Prediction]:
    """A ``Prediction`` per row of ``logits``: the ``top_k`` most probable labels (softmax; ties in
    class order), their class indices and the row itself."""
    out = []
    for source, raw, row in zip(sources, logits, softmax(logits)):
        idx = np.argsort(-row, kind="stable")[:top_k]
        out.append(Prediction(source, [(labels[j], float(row[j])) for j in idx], [int(j) for j in idx],
                              [float(v) for v in raw]))
    return out
