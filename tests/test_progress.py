"""How progress reads: one duration format, live lines only on a terminal, job events shown alike."""

import io

import pytest

from edgetune.cli.remote import job_event
from edgetune.progress import EpochEnd, LogLine, StepProgress, TerminalProgress, format_duration
from edgetune.v1 import jobs_pb2


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (125, "2m05s"),
                                          (3599, "59m59s"), (3840, "1h04m"), (-3, "0s")])
def test_one_duration_format(seconds, text):
    assert format_duration(seconds) == text


def test_a_log_file_gets_epochs_not_steps():
    out = io.StringIO()  # not a TTY
    show = TerminalProgress(out)
    for step in range(1, 101):
        show(StepProgress(1, 3, step, 100, 0.5, 1e-3, 130.0))
    show(EpochEnd(1, 3, {"val_loss": 0.25}, 65.0, True))
    show(LogLine("done"))
    assert out.getvalue() == "epoch 1/3 val_loss 0.2500 (1m05s) *best\ndone\n"


def test_job_events_become_the_workers_progress_events():
    step = job_event(jobs_pb2.JobEvent(step=jobs_pb2.StepProgress(epoch=1, epochs=3, step=5, steps=10, loss=0.5,
                                                                  learning_rate=1e-3, eta_seconds=130)), 3)
    assert step == StepProgress(1, 3, 5, 10, 0.5, pytest.approx(1e-3), 130.0)
    classifier = job_event(jobs_pb2.JobEvent(epoch=jobs_pb2.EpochMetrics(epoch=1, val_macro_f1=0.9)), 3)
    assert isinstance(classifier, EpochEnd) and "val_macro_f1" in classifier.metrics and classifier.epochs == 3
    # Generation reports perplexity and has no macro-F1: none is shown (it would read 0.0000).
    generation = job_event(jobs_pb2.JobEvent(epoch=jobs_pb2.EpochMetrics(epoch=1, val_perplexity=7.5)), 3)
    assert "val_macro_f1" not in generation.metrics and generation.metrics["val_perplexity"] == 7.5
    state = job_event(jobs_pb2.JobEvent(job_id="job-1", state=jobs_pb2.JOB_STATE_SUCCEEDED), 3)
    assert state.message == "job job-1: SUCCEEDED"
