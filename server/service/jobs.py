"""Jobs: requests validated into a TrainConfig (``jobspec``), queued in the store, run by the runner's workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

from edgetune.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from edgetune.tasks import IMAGE_CLASSIFICATION

from edgetune.server.jobspec import train_config
from edgetune.server.runner import JobRunner
from edgetune.server.service.config import ServerConfig, next_token, page_bounds
from edgetune.server.service.datasets import Datasets
from edgetune.server.store import TERMINAL, EventRow, JobRow, Store, new_id


class Jobs:
    """Fine-tuning jobs: created idempotently, listed, cancelled, watched event by event."""

    def __init__(self, config: ServerConfig, store: Store, runner: JobRunner, datasets: Datasets):
        self.config, self.store, self.runner, self.datasets = config, store, runner, datasets

    def create(self, request: dict, idempotency_key: str = "") -> JobRow:
        if len(idempotency_key) > 128:
            raise InvalidArgument("idempotency_key", "must be at most 128 characters")
        dataset = self.datasets.get(request.get("dataset_id", ""))
        kind = dataset["report"].get("task", IMAGE_CLASSIFICATION)
        if kind != request.get("task"):
            raise InvalidArgument("dataset_id", f"dataset {dataset['id']} holds {kind} data; the job's task is "
                                                f"{request.get('task')}")
        cfg = train_config(request, dataset["path"], dataset["report"].get("columns"))
        request = {**request, "gpus": self._gpus(request.get("gpus", 0))}
        try:
            job, created = self.store.add_job(new_id("job"), request, dataset["id"], idempotency_key or None,
                                              cfg.optim.epochs, self.config.max_queued)
        except OverflowError:
            raise ResourceExhausted("queue", f"{self.config.max_queued} jobs are already queued") from None
        except LookupError:
            raise NotFound("dataset_id", f"dataset {dataset['id']!r} was just deleted") from None
        if not created and job.request != request:
            raise AlreadyExists("idempotency_key", f"already used by job {job.id} with a different request")
        self.runner.wake()
        return job

    def _gpus(self, asked: int) -> int:
        """GPUs a job trains on: as asked, 0 meaning one when the server has any (else the CPU)."""
        have = len(self.config.gpus)
        if asked < 0:
            raise InvalidArgument("gpus", f"must be >= 0, got {asked}")
        if asked > have:
            raise InvalidArgument("gpus", f"this server hands out {have} GPU(s), the job asks for {asked}")
        return asked or min(have, 1)

    def get(self, job_id: str) -> JobRow:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound("job_id", f"no job {job_id!r}")
        return job

    def list(self, state: str | None, page_size: int, page_token: str) -> tuple[list[JobRow], str]:
        offset, limit = page_bounds(page_size, page_token)
        rows = self.store.list_jobs(state, offset, limit)
        return rows, next_token(offset, limit, len(rows))

    def cancel(self, job_id: str) -> JobRow:
        job = self.get(job_id)
        if job.state not in TERMINAL:
            self.runner.cancel(job_id)
        return self.get(job_id)

    def watch(self, job_id: str, after_event_id: int, is_active=lambda: True,
                  poll_s: float = 0.25) -> Iterator[EventRow]:
        """Events after ``after_event_id``, then live ones until the job is finished."""
        self.get(job_id)
        return follow_events(self.store, job_id, lambda: self.get(job_id).state in TERMINAL, after_event_id,
                             is_active, poll_s)


def follow_events(store: Store, subject_id: str, finished, after_event_id: int, is_active, poll_s: float
                  ) -> Iterator[EventRow]:
    """The events of a job or an export after ``after_event_id``, then live ones until ``finished()``
    and nothing is left to send."""
    last = after_event_id
    while is_active():
        events = store.events_after(subject_id, last)
        for e in events:
            last = e.id
            yield e
        if not events:
            if finished() and not store.events_after(subject_id, last, 1):
                return
            time.sleep(poll_s)
