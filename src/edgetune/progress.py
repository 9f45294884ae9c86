"""Progress events from long work, and the sinks that show them.

Trainers and export emit typed events to a sink (any callable). The terminal sink redraws one
line with epoch/step, loss and the job's ETA when its stream is a TTY and prints only per-epoch
lines otherwise, so logs stay quiet. The server persists the same events; ``edgetune remote
watch`` and the demo show them through the terminal sink too. Durations read one way everywhere
(``format_duration``).

A stop request (``request_stop``, safe to call from a signal handler) is how a worker or the CLI
asks training to end early: the training loop saves its resume state at the next optimizer step
and raises ``TrainingStopped``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO, Union


@dataclass
class StepProgress:
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    eta_s: float  # seconds left in the whole job (this epoch, its evaluation and the epochs after it)


@dataclass
class EpochEnd:
    epoch: int
    epochs: int
    metrics: dict[str, float]
    seconds: float
    best: bool


@dataclass
class LogLine:
    message: str
    level: str = "info"
    time: float = field(default_factory=time.time)


Event = Union[StepProgress, EpochEnd, LogLine]
ProgressSink = Callable[[Event], None]


class TrainingStopped(BaseException):
    """Training ended at a stop request after saving its resume state (BaseException: no recipe
    ``except Exception`` swallows it)."""


_stop = False


def request_stop(*_signal_args) -> None:
    """Ask training to stop at its next optimizer step. Usable as a signal handler: it only sets a flag."""
    global _stop
    _stop = True


def stop_requested() -> bool:
    return _stop


def silent(event: Event) -> None:
    """A sink that drops everything."""


def format_duration(seconds: float) -> str:
    """``42s``, ``2m05s``, ``1h04m``: how every edgetune output shows a duration."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class TerminalProgress:
    """Shows events on a stream; live step updates only when the stream is a terminal."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.2):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._dirty = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepProgress):
            now = time.monotonic()
            if self.live and (now - self._last >= self.min_interval_s or event.step == event.steps):
                self._last = now
                self.stream.write(f"\repoch {event.epoch}/{event.epochs} step {event.step}/{event.steps} "
                                  f"loss {event.loss:.4f} lr {event.lr:.2e} ETA {format_duration(event.eta_s)}\x1b[K")
                self.stream.flush()
                self._dirty = True
            return
        self._clear()
        if isinstance(event, EpochEnd):
            m = " ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            self.stream.write(f"epoch {event.epoch}/{event.epochs} {m} ({format_duration(event.seconds)})"
                              f"{' *best' if event.best else ''}\n")
        elif isinstance(event, LogLine):
            self.stream.write(f"{event.message}\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self._dirty:
            self.stream.write("\r\x1b[K")
            self._dirty = False
