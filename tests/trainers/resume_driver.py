"""A training process for the kill tests: ``python -m tests.trainers.resume_driver CONFIG OUT [--resume]``.

Prints ``step EPOCH STEP`` after every optimizer step's progress event (the step's checkpoint, when
it has one, is already written), stops like a worker at SIGTERM (exit 75), and prints its peak RSS
through the last training step (``peak_rss_kb``: before the end-of-run report, whose plotting and
model rebuild would only add noise).
"""

import resource
import signal
import sys

from edgetune.progress import StepProgress, TrainingStopped, request_stop
from edgetune.trainers.config import load_config
from edgetune.trainers.train import train


def main() -> int:
    config, out = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGTERM, request_stop)
    cfg = load_config(config)
    peak = []

    def sink(event):
        if isinstance(event, StepProgress):
            print(f"step {event.epoch} {event.step}", flush=True)
            if event.step == event.steps:
                peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    try:
        train(cfg, out, sink, resume="--resume" in sys.argv)
    except TrainingStopped:
        return 75
    print(f"peak_rss_kb {max(peak)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
