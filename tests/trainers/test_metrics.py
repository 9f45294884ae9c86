"""Classification metrics and the degenerate-model check (numpy only)."""

import numpy as np

from edgetune.trainers.metrics import degenerate_reasons

CLASSES = ["a", "b", "c"]


def test_a_model_that_learned_is_not_flagged():
    labels = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[labels] * 4.0 + np.random.default_rng(0).normal(0, 0.1, (6, 3))
    assert degenerate_reasons(logits, labels, CLASSES) == []


def test_constant_outputs_are_flagged():
    labels = np.array([0, 1, 2, 0, 1, 2])
    logits = np.tile([0.3, -1.2, 2.5], (6, 1)) + 1e-7 * np.arange(6)[:, None]  # moves by rounding only
    reasons = degenerate_reasons(logits, labels, CLASSES)
    assert len(reasons) == 2 and "outputs are constant" in reasons[0] and "over 6 inputs" in reasons[0]
    assert "majority-class rate" in reasons[1]


def test_accuracy_at_the_majority_rate_is_flagged():
    labels = np.array([0, 0, 0, 0, 1, 2])  # always answering 'a' scores 4/6
    logits = np.zeros((6, 3))
    logits[:, 0] = np.linspace(1, 2, 6)  # varied outputs, but always 'a'
    reasons = degenerate_reasons(logits, labels, CLASSES)
    assert reasons == ["val accuracy 0.6667 is not above the majority-class rate 0.6667 (always answering 'a')"]
    logits[4, 1] = 5.0  # one more right answer lifts it above the majority rate
    assert degenerate_reasons(logits, labels, CLASSES) == []
