"""The run report's curve and confusion-matrix figures (matplotlib, no display needed)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from edgetune.trainers.report import confusion_figure, curves_figure, plot_confusion, plot_curves


def _row(epoch, train_loss, val_loss, acc, f1=None, **extra):
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": acc,
           "seconds": 1.0, "lr": 1e-3, **extra}
    if f1 is not None:
        row["val_macro_f1"] = f1
    return row


CLASSIFIER = [_row(1, 0.52, 0.41, 0.886, 0.886), _row(2, 0.31, 0.30, 0.930, 0.925),
              _row(3, 0.22, 0.25, 0.978, 0.978)]
GENERATION = [{"epoch": e, "train_loss": 3.0 - 0.3 * e, "val_loss": 3.1 - 0.2 * e, "val_perplexity": 20.0 / e,
               "val_accuracy": 0.30 + 0.02 * e, "task": "text_generation"} for e in (1, 2, 3)]


def _panel(fig, title):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def _visible_tick_labels(fig, ax):
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    return [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= v <= hi]


def _labels(ax):
    return [line.get_label() for line in ax.lines]


def _as_int(text):
    return int(text.replace("\N{MINUS SIGN}", "-"))


@pytest.mark.parametrize("epochs", [1, 3, 7, 40])
def test_epoch_ticks_are_integers_only(epochs):
    history = [_row(e, 1 / e, 1 / e, 0.5 + 0.01 * e, 0.5) for e in range(1, epochs + 1)]
    fig = curves_figure(history)
    for ax in fig.axes:
        labels = _visible_tick_labels(fig, ax)
        assert labels and all(t.lstrip("\N{MINUS SIGN}-").isdigit() for t in labels), labels
        assert all(1 <= _as_int(t) <= epochs for t in labels), labels
        if epochs <= 7:  # few epochs: exactly the epoch numbers
            assert [_as_int(t) for t in labels] == list(range(1, epochs + 1))


def test_validation_y_axis_fits_the_data_within_0_1():
    ax = _panel(curves_figure(CLASSIFIER), "validation")
    lo, hi = ax.get_ylim()
    assert 0 <= lo < 0.886 and 0.978 < hi <= 1
    assert hi - lo < 0.5, "a fixed 0..1 axis would flatten 0.886 -> 0.978"


def test_y_axis_never_leaves_0_1_for_accuracy():
    history = [_row(e, 0.1, 0.1, acc, acc) for e, acc in ((1, 0.97), (2, 1.0), (3, 1.0))]
    lo, hi = _panel(curves_figure(history), "validation").get_ylim()
    assert 0 <= lo < 0.97 and hi == pytest.approx(1.0)


def test_validation_lines_are_distinguishable():
    ax = _panel(curves_figure(CLASSIFIER), "validation")
    assert _labels(ax) == ["val accuracy", "val macro-F1"]
    acc, f1 = ax.lines
    assert to_rgba(acc.get_color()) != to_rgba(f1.get_color())
    assert acc.get_linestyle() != f1.get_linestyle()
    assert acc.get_marker() != f1.get_marker()
    # coinciding values (epochs 1 and 3): the line on top has larger hollow markers, so both show
    assert f1.get_zorder() > acc.get_zorder() and f1.get_markersize() > acc.get_markersize()
    assert f1.get_markerfacecolor() == "none" or to_rgba(f1.get_markerfacecolor())[3] == 0


def test_best_epoch_value_is_annotated():
    ax = _panel(curves_figure(CLASSIFIER), "validation")
    texts = {t.get_text(): t.xy for t in ax.texts}
    assert "0.978" in texts and texts["0.978"] == (3, pytest.approx(0.978))
    loss = _panel(curves_figure(CLASSIFIER), "loss")
    assert "0.250" in [t.get_text() for t in loss.texts]  # lowest val loss, epoch 3


def test_single_epoch_has_markers_values_and_limits(tmp_path):
    history = CLASSIFIER[:1]
    fig = curves_figure(history)
    for ax in fig.axes:
        assert ax.get_xlim() == pytest.approx((0.5, 1.5))
        assert ax.lines and all(line.get_marker() not in (None, "", "None", " ") for line in ax.lines)
        assert all(line.get_markersize() >= 5 for line in ax.lines)
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == len(ax.lines)  # every value is labelled
    assert sorted(t.get_text() for t in _panel(fig, "validation").texts) == ["0.886", "0.886"]
    path = tmp_path / "curves.png"
    plot_curves(history, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_generation_history_plots_only_present_metrics():
    fig = curves_figure(GENERATION)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "validation"]
    labels = [label for ax in fig.axes for label in _labels(ax)]
    assert labels == ["train loss", "val loss", "val next-token accuracy"]
    assert not any("F1" in label for label in labels)


def test_the_task_names_what_accuracy_means():
    history = [{k: v for k, v in row.items() if k != "task"} for row in GENERATION]  # as fit() writes it
    labels = [line.get_label() for ax in curves_figure(history, "text_generation").axes for line in ax.get_lines()]
    assert "val next-token accuracy" in labels


def test_accuracy_label_without_task_hint():
    history = [{k: v for k, v in row.items() if k != "task"} for row in GENERATION]
    assert _labels(_panel(curves_figure(history), "validation")) == ["val accuracy"]


def test_chrf_gets_its_own_panel_when_present():
    history = [{**row, "chrf": 30.0 + e} for e, row in enumerate(GENERATION)]
    ax = _panel(curves_figure(history), "chrF")
    assert _labels(ax) == ["chrF"] and 0 <= ax.get_ylim()[0] < 30 < 32 < ax.get_ylim()[1] <= 100


def test_confusion_is_coloured_by_row_rate_with_counts_and_percentages(tmp_path):
    cm = np.array([[980, 0], [12, 150]])
    fig = confusion_figure(cm, ["ham", "spam"])
    ax = next(a for a in fig.axes if a.images)
    shown = np.asarray(ax.images[0].get_array())
    assert shown.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert shown[1, 0] == pytest.approx(12 / 162) and shown[0, 0] == pytest.approx(1.0)
    assert ax.images[0].get_clim() == (0, 1)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert cells[(1, 0)].get_text() == "12\n(7%)"
    assert cells[(0, 0)].get_text() == "980\n(100%)" and cells[(1, 1)].get_text() == "150\n(93%)"
    # text colour follows the normalised value: light text on the dark 93% cell, dark on the pale 7% cell
    assert to_rgba(cells[(1, 1)].get_color()) == to_rgba("white")
    assert to_rgba(cells[(1, 0)].get_color()) == to_rgba("black")
    colorbar = next(a for a in fig.axes if a is not ax)
    assert "fraction of true class" in colorbar.get_ylabel()
    path = tmp_path / "confusion.png"
    plot_confusion(cm, ["ham", "spam"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_confusion_rows_without_support_stay_zero():
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 6]])
    shown = np.asarray(next(a for a in confusion_figure(cm, list("abc")).axes if a.images).images[0].get_array())
    assert np.all(np.isfinite(shown)) and shown[1].tolist() == [0, 0, 0]
    assert shown[0].sum() == pytest.approx(1) and shown[2].sum() == pytest.approx(1)


@pytest.mark.parametrize("n, texts", [(30, 900), (31, 0)])
def test_confusion_size_rules_and_no_text_over_30_classes(n, texts):
    cm = np.eye(n, dtype=np.int64) * 10 + 1
    fig = confusion_figure(cm, [f"c{i}" for i in range(n)])
    ax = next(a for a in fig.axes if a.images)
    assert len(ax.texts) == texts
    assert tuple(fig.get_size_inches()) == pytest.approx((min(4 + 0.4 * n, 20),) * 2)
