"""A training process for the kill tests: ``python -m tests.trainers.resume_driver CONFIG OUT [--resume]``
(also as each process of a DDP job started by ``edgetune.launch``: rank 0 prints).

Prints ``step EPOCH STEP`` after every optimizer step's progress event (the step's checkpoint, when
it has one, is already written), stops like a worker at SIGTERM (exit 75), and prints its peak RSS
through the last training step (``peak_rss_kb``: before the end-of-run report, whose plotting and
model rebuild would only add noise).
"""

import resource
import signal
import sys

from edgetune.launch import record_exit
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
        return record_exit(75)
    if peak:  # rank 0 of a DDP job, or a single process
        print(f"peak_rss_kb {max(peak)}", flush=True)
    return record_exit(0)


if __name__ == "__main__":
    sys.exit(main())
