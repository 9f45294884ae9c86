"""Run reports: per-class metrics, a text summary, and the curve / confusion-matrix PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import per_class, summarize


def class_table(cm: np.ndarray, classes: list[str]) -> list[dict]:
    precision, recall, f1 = per_class(cm)
    support = cm.sum(axis=1)
    return [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)]


def final_metrics(cm: np.ndarray, classes: list[str]) -> dict:
    return {**summarize(cm), "per_class": class_table(cm, classes), "confusion_matrix": cm.tolist()}


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    a.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    a.set_xlabel("epoch"), a.legend(), a.set_title("loss")
    b.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val accuracy")
    if "val_macro_f1" in history[0]:
        b.plot(epochs, [h["val_macro_f1"] for h in history], "o-", label="val macro-F1")
    b.set_xlabel("epoch"), b.set_ylim(0, 1.02), b.legend(), b.set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = min(4 + 0.4 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("confusion matrix (validation)")
    if n <= 30:
        hi = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > hi else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _generation_summary(report: dict) -> str:
    b, a = report["before"] or {}, report["final"]
    lines = [f"run: {report['run_dir']}",
             f"model: {report['arch']} via {report['method']}, weights: {report['weights']['source']}",
             f"trainable parameters: {report['trainable_params']:,} of {report['total_params']:,}",
             f"{'val set':<22}{'base':>10}{'tuned':>10}"]
    for key, name, f in (("val_loss", "loss", ".4f"), ("val_perplexity", "perplexity", ".2f"),
                         ("val_accuracy", "next-token accuracy", ".4f"), ("exact_match", "exact match", ".4f"),
                         ("chrf", "chrF", ".2f")):
        lines.append(f"{name:<22}{format(b.get(key, float('nan')), f):>10}{format(a[key], f):>10}")
    lines.append(f"best epoch {report['best_epoch']} of {len(report['history'])}; curves: "
                 f"{Path(report['run_dir']) / 'curves.png'}")
    return "\n".join(lines)


def format_summary(report: dict) -> str:
    """A short human summary of a finished run; a degenerate model's reasons come last."""
    text = _generation_summary(report) if report.get("task") == "text_generation" else _classifier_summary(report)
    warnings = [f"WARNING: degenerate model: {r} (export refuses it unless allowed)"
                for r in report.get("degenerate", [])]
    return "\n".join([text, *warnings])


def _classifier_summary(report: dict) -> str:
    f = report["final"]
    lines = [f"run: {report['run_dir']}",
             f"model: {report['arch']} via {report['method']}, weights: {report['weights']['source']}",
             f"trainable parameters: {report['trainable_params']:,} of {report['total_params']:,}",
             f"best epoch {report['best_epoch']}: val accuracy {f['accuracy']:.4f}, macro-F1 {f['macro_f1']:.4f}"]
    if report.get("before"):
        bm = report["before"]
        lines.append(f"before re-tuning: val accuracy {bm['val_accuracy']:.4f}, macro-F1 {bm['val_macro_f1']:.4f}")
    rows = sorted(f["per_class"], key=lambda r: r["recall"])
    if len(rows) <= 20:
        lines.append(f"{'class':<16}{'precision':>10}{'recall':>8}{'support':>9}")
        lines += [f"{r['class'][:15]:<16}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['support']:>9}"
                  for r in sorted(rows, key=lambda r: r["class"])]
    else:
        lines.append("lowest recall: " + ", ".join(f"{r['class']} {r['recall']:.3f}" for r in rows[:5]))
    lines.append(f"confusion matrix: {Path(report['run_dir']) / 'confusion.png'}; curves: "
                 f"{Path(report['run_dir']) / 'curves.png'}")
    return "\n".join(lines)
