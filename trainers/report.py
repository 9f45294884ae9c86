"""Run reports: per-class metrics, a text summary, and the curve / confusion-matrix PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.tasks import TEXT_GENERATION
from edgetune.trainers.metrics import per_class, summarize


def class_table(cm: np.ndarray, classes: list[str]) -> list[dict]:
    precision, recall, f1 = per_class(cm)
    support = cm.sum(axis=1)
    return [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)]


def final_metrics(cm: np.ndarray, classes: list[str]) -> dict:
    return {**summarize(cm), "per_class": class_table(cm, classes), "confusion_matrix": cm.tolist()}


# Curve panels: (title, y bounds or None, [(history key, label, best: "max" / "min" / None)]).
# Only metrics present in the history are drawn; a panel with none of its metrics is left out.
_PANELS = (
    ("loss", None, (("train_loss", "train loss", None), ("val_loss", "val loss", "min"))),
    ("validation", (0.0, 1.0), (("val_accuracy", "val accuracy", "max"), ("val_macro_f1", "val macro-F1", "max"),
                                ("exact_match", "exact match", "max"))),
    ("chrF", (0.0, 100.0), (("chrf", "chrF", "max"),)),
)
# Distinct colour, line style and marker per line of a panel; later lines are drawn on top with larger,
# hollow markers, so lines that coincide both stay visible.
_STYLES = (dict(color="tab:blue", linestyle="-", marker="o", markersize=6, linewidth=2.2),
           dict(color="tab:red", linestyle="--", marker="s", markersize=9, linewidth=1.5, markerfacecolor="none"),
           dict(color="tab:green", linestyle=":", marker="^", markersize=9, linewidth=1.5, markerfacecolor="none"))


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    rows = [h for h in history if h.get(key) is not None and np.isfinite(h[key])]
    return [int(h["epoch"]) for h in rows], [float(h[key]) for h in rows]


def _label(history: list[dict], key: str, label: str, task: str | None) -> str:
    task = task or next((h["task"] for h in history if h.get("task")), None)
    return "val next-token accuracy" if key == "val_accuracy" and task == TEXT_GENERATION else label


def _fit_ylim(ax, values: list[float], bounds: tuple[float, float] | None) -> None:
    """The data's range plus a margin, never beyond the metric's bounds."""
    lo, hi = min(values), max(values)
    scale = bounds[1] - bounds[0] if bounds else max(abs(lo), abs(hi)) or 1.0
    pad = max(0.25 * (hi - lo), 0.03 * scale)
    lo, hi = lo - pad, hi + pad
    if bounds:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    ax.set_ylim(lo, hi)


def _annotate(ax, x: int, y: float, best: str | None, color: str) -> None:
    """Label a point away from its line (above a maximum, below a minimum); a panel's labels stack."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    above = best != "min"
    if above and y > y1 - 0.1 * (y1 - y0) or not above and y < y0 + 0.1 * (y1 - y0):
        above = not above  # no room between the point and the edge of the axes
    right = x > (x0 + x1) / 2
    ax.annotate(f"{y:.3f}" if abs(y) < 10 else f"{y:.1f}", (x, y), textcoords="offset points",
                xytext=(-4 if right else 4, (1 if above else -1) * (7 + 11 * len(ax.texts))), color=color, fontsize=8,
                ha="right" if right else "left", va="bottom" if above else "top",
                bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.8))


def _epoch_axis(ax, epochs: list[int]) -> None:
    """Integer epoch ticks only: every epoch for short runs; x limits half an epoch beyond the data."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = min(epochs), max(epochs)
    ax.set_xlim(lo - 0.5, hi + 0.5)
    if hi - lo < 12:
        ax.set_xticks(range(lo, hi + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _draw_panel(ax, history: list[dict], title: str, bounds, metrics, task: str | None) -> None:
    lines = [(*_series(history, key), _label(history, key, label, task), best) for key, label, best in metrics]
    lines = [line for line in lines if line[0]]
    _fit_ylim(ax, [y for line in lines for y in line[1]], bounds)
    for i, (xs, ys, label, best) in enumerate(lines):
        style = _STYLES[i % len(_STYLES)]
        ax.plot(xs, ys, label=label, zorder=2 + i, clip_on=False, **style)
        if best or len(xs) == 1:  # the best epoch's value; every value of a single-epoch run
            j = int(np.argmin(ys) if best == "min" else np.argmax(ys))
            _annotate(ax, xs[j], ys[j], best, style["color"])
    _epoch_axis(ax, [x for line in lines for x in line[0]])
    ax.set_title(title), ax.legend(fontsize=8), ax.grid(alpha=0.3)


def curves_figure(history: list[dict], task: str | None = None):
    """The training curves as a matplotlib Figure: one panel per group of metrics the history has
    (``task`` names what accuracy means: next-token accuracy for text generation)."""
    from matplotlib.figure import Figure

    panels = [p for p in _PANELS if any(_series(history, key)[0] for key, _, _ in p[2])]
    fig = Figure(figsize=(5 * max(len(panels), 1), 4))
    if not panels:
        fig.text(0.5, 0.5, "no epochs recorded", ha="center", va="center")
        return fig
    for ax, (title, bounds, metrics) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        _draw_panel(ax, history, title, bounds, metrics, task)
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict], path: Path, task: str | None = None) -> None:
    curves_figure(history, task).savefig(path, dpi=100)


def _percent(rate: float) -> str:
    if 0 < rate < 0.005:
        return "<1%"
    return ">99%" if 0.995 <= rate < 1 else f"{rate:.0%}"


def confusion_figure(cm: np.ndarray, classes: list[str]):
    """The confusion matrix as a Figure, coloured by row-normalised rate (the fraction of each true class)."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    support = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    n = len(classes)
    size = min(4 + 0.4 * n, 20)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("fraction of true class (row-normalised)")
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("confusion matrix (validation)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]}\n({_percent(rate[i, j])})", ha="center", va="center",
                        color="white" if rate[i, j] > 0.5 else "black", fontsize=8 if n <= 20 else 7)
    fig.tight_layout()
    return fig


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> None:
    confusion_figure(cm, classes).savefig(path, dpi=100)


def format_summary(report: dict, paths: bool = True) -> str:
    """A short human summary of a finished run; a degenerate model's reasons come last.

    ``paths=False`` leaves out the run's files (for remote clients, to whom server paths mean nothing).
    """
    head = [f"model: {report['arch']} via {report['method']}; trainable parameters: "
            f"{report['trainable_params']:,} of {report['total_params']:,}"]
    body = _generation_summary(report) if report.get("task") == TEXT_GENERATION else _classifier_summary(report)
    run = Path(report["run_dir"])
    files = [f"run: {run} (report.json, curves.png"
             + (", confusion.png)" if report.get("task") != TEXT_GENERATION else ")")] if paths else []
    warnings = [f"WARNING: degenerate model: {r} (export refuses it unless allowed)"
                for r in report.get("degenerate", [])]
    return "\n".join([*head, *body, *files, *warnings])


def _generation_summary(report: dict) -> list[str]:
    b, a = report["before"] or {}, report["final"]
    lines = [f"{'val set':<22}{'base':>10}{'tuned':>10}"]
    for key, name, f in (("val_loss", "loss", ".4f"), ("val_perplexity", "perplexity", ".2f"),
                         ("val_accuracy", "next-token accuracy", ".4f"), ("exact_match", "exact match", ".4f"),
                         ("chrf", "chrF", ".2f")):
        lines.append(f"{name:<22}{format(b.get(key, float('nan')), f):>10}{format(a[key], f):>10}")
    lines.append(f"best epoch {report['best_epoch']} of {len(report['history'])}")
    return lines


def _classifier_summary(report: dict) -> list[str]:
    f = report["final"]
    lines = [f"best epoch {report['best_epoch']} of {len(report['history'])}: val accuracy {f['accuracy']:.4f}, "
             f"macro-F1 {f['macro_f1']:.4f}"]
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
    return lines
