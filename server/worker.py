"""One job, one process: ``python -m edgetune.server.worker --db DB --job ID --run-dir DIR --data DIR``.

With ``--processes K`` (K > 1, a job on K GPUs) it starts K copies of itself through torchrun
(``edgetune.launch``): rank 0 writes the job's events, and its exit code is the worker's.

Runs ``train`` (the task's recipe) and writes its progress to the store as events. Exit codes: 0 done;
2 the job's input was bad (the reason is the last log event); 75 stopped by SIGTERM: during training
at the next optimizer step, after saving the resume state there (resumable mid-epoch). Anything else is a crash the server reports.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from edgetune.errors import EdgetuneError
from edgetune.launch import EXIT_STOPPED, die_with_parent, launch
from edgetune.progress import EpochEnd, LogLine, StepProgress, TrainingStopped, request_stop

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = EXIT_STOPPED  # stopped by SIGTERM, resume state saved
STEP_EVENT_INTERVAL_S = 2.0


class Interrupted(BaseException):
    """Raised in the training thread when the server asks the worker to stop."""


_stop_requested = False


def _request_stop(signum, frame) -> None:
    # Only flags: raising from a signal handler can land inside library code (an import, a
    # DataLoader) that swallows it. Training saves its state and stops at the next optimizer step;
    # before training starts, the sink raises at the next event.
    global _stop_requested
    _stop_requested = True
    request_stop()


def check_stop() -> None:
    if _stop_requested:
        raise Interrupted()


class StoreSink:
    """Progress sink writing events: every epoch and log line, step progress every few seconds.
    Outside the training steps (set-up, evaluation) it is where a stop request takes effect."""

    def __init__(self, store, job_id: str):
        self.store, self.job_id, self._last_step = store, job_id, 0.0

    def __call__(self, event) -> None:
        self._write(event)
        if not isinstance(event, StepProgress):  # the training loop stops itself, after saving its state
            check_stop()  # after the write, so a finished epoch's event is never lost

    def _write(self, event) -> None:
        if isinstance(event, StepProgress):
            now = time.monotonic()
            if now - self._last_step >= STEP_EVENT_INTERVAL_S:
                self._last_step = now
                self.store.add_event(self.job_id, "step", vars(event))
        elif isinstance(event, EpochEnd):
            self.store.record_epoch(self.job_id, {"epoch": event.epoch, "seconds": event.seconds,
                                                  **event.metrics}, event.best)
        elif isinstance(event, LogLine):
            self.store.add_event(self.job_id, "log", {"message": event.message})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args(argv)
    # No orphan keeps training a job the restarted server re-queues: the worker dies with the
    # server; under torchrun, each process with torchrun, which dies with the worker.
    die_with_parent()
    rank = int(os.environ.get("RANK", "0"))
    if args.processes > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args.processes, ["edgetune.server.worker", *(sys.argv[1:] if argv is None else argv)])

    signal.signal(signal.SIGTERM, _request_stop)

    from edgetune.quiet import quiet_libraries
    from edgetune.server.jobspec import train_config
    from edgetune.server.store import Store
    from edgetune.trainers.run import RunFiles
    from edgetune.trainers.train import train

    from edgetune.launch import record_exit

    quiet_libraries()
    store = Store(args.db)
    job = store.get_job(args.job)
    main_rank = rank == 0
    sink = StoreSink(store, args.job) if main_rank else (lambda event: check_stop())
    run_dir = Path(args.run_dir)
    try:
        check_stop()
        dataset = store.get_dataset(job.dataset_id) or {}
        cfg = train_config(job.request, args.data, (dataset.get("report") or {}).get("columns"))
        resume = RunFiles(run_dir).state.is_file()
        if resume:
            sink(LogLine("resuming from the last checkpoint"))
        result = train(cfg, run_dir, sink, resume=resume)
        if main_rank:
            # The recipe already logged each reason as a warning event; the job row shows them too.
            store.set_warnings(args.job, [f"degenerate model: {r}" for r in result.report.get("degenerate", [])])
            sink(LogLine(result.summary(paths=False)))  # clients read it: server paths mean nothing to them
        return record_exit(0)
    except (Interrupted, TrainingStopped):
        if main_rank:
            store.add_event(args.job, "log", {"message": "worker stopped at the server's request"})
        return record_exit(EXIT_INTERRUPTED)
    except EdgetuneError as e:
        if main_rank:
            sink(LogLine(f"error: {e.subject}: {e.message}", level="error"))
        print(f"edgetune: error: {e.subject}: {e.message}", file=sys.stderr)
        return record_exit(EXIT_BAD_INPUT)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
