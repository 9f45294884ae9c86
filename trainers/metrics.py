"""Classification metrics from a confusion matrix (numpy only)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true labels, columns predictions."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class; 0 where undefined."""
    tp = np.diag(cm).astype(np.float64)
    pred = cm.sum(axis=0)
    true = cm.sum(axis=1)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def summarize(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in the true labels."""
    total = cm.sum()
    _, _, f1 = per_class(cm)
    present = cm.sum(axis=1) > 0
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }


# A logit that moves by less than this (relative to the largest logit, at least 1) over the whole
# validation set carries no information: fp32 rounding and an export's tolerance are larger.
CONSTANT_SPREAD = 1e-4


def degenerate_reasons(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[str]:
    """Why a classifier's validation outputs say it learned nothing usable; empty when they don't.

    Flags outputs that are (near) constant across inputs, and accuracy that is not above the
    rate of always answering the most frequent validation class.
    """
    reasons = []
    if len(logits) >= 2:
        spread = float(np.ptp(logits, axis=0).max())
        scale = max(1.0, float(np.abs(logits).max()))
        if spread <= CONSTANT_SPREAD * scale:
            reasons.append(f"validation outputs are constant: over {len(logits)} inputs no logit moves by more "
                           f"than {spread:.1e}")
    counts = np.bincount(labels, minlength=len(classes))
    if counts.sum() and len(classes) >= 2:
        majority = int(counts.argmax())
        rate = float(counts[majority] / counts.sum())
        accuracy = float((logits.argmax(-1) == labels).mean())
        if accuracy <= rate:
            reasons.append(f"val accuracy {accuracy:.4f} is not above the majority-class rate {rate:.4f} "
                           f"(always answering {classes[majority]!r})")
    return reasons
