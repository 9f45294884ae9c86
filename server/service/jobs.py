"""Jobs: requests validated into a TrainConfig (``jobspec``), queued in the store, run by the runner's workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

from edgetune.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, shown
from edgetune.tasks import IMAGE_CLASSIFICATION, get_task

from edgetune.server.auth import Principal
from edgetune.server.jobspec import train_config
from edgetune.server.runner import JobRunner
from edgetune.server.service.config import ServerConfig
from edgetune.server.service.paging import Page, page_of, page_request
from edgetune.server.service.datasets import Datasets
from edgetune.server.store import TERMINAL, EventRow, JobRow, Store, new_id


class Jobs:
    """Fine-tuning jobs: created idempotently, listed, cancelled, watched event by event."""

    def __init__(self, config: ServerConfig, store: Store, runner: JobRunner, datasets: Datasets):
        self.config, self.store, self.runner, self.datasets = config, store, runner, datasets

    def create(self, request: dict, principal: Principal, idempotency_key: str = "") -> JobRow:
        if len(idempotency_key) > 128 or not idempotency_key.isprintable():
            raise InvalidArgument("idempotency_key", "must be at most 128 printable characters")
        dataset = self.datasets.get(request.get("dataset_id", ""), principal)
        kind = dataset["report"].get("task", IMAGE_CLASSIFICATION)
        if kind != request.get("task"):
            raise InvalidArgument("dataset_id", f"dataset {dataset['id']} holds {kind} data; the job's task is "
                                                f"{request.get('task')}")
        cfg = train_config(request, dataset["path"], dataset["report"].get("columns"))
        request = {**request, "gpus": self._gpus(request.get("gpus", 0)), "resolved": resolved(cfg)}
        try:
            job, created = self.store.add_job(new_id("job"), request, dataset["id"], idempotency_key or None,
                                              cfg.optim.epochs, self.config.max_queued, principal.name,
                                              None if principal.admin else self.config.max_queued_per_principal)
        except OverflowError:
            raise ResourceExhausted("queue", f"{self.config.max_queued} jobs are already queued") from None
        except PermissionError:
            raise ResourceExhausted("queue", f"you already have {self.config.max_queued_per_principal} jobs "
                                             "queued (the per-principal quota)") from None
        except LookupError:
            raise NotFound("dataset_id", f"dataset {dataset['id']!r} was just deleted") from None
        if not created and job.owner != principal.name:  # keys are per principal; never another's job
            raise AlreadyExists("idempotency_key", "already used by another principal's job")
        if not created and _asked(job.request) != _asked(request):
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

    def get(self, job_id: str, principal: Principal) -> JobRow:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound("job_id", f"no job {shown(job_id)}")
        principal.check_owner("job_id", job.owner, "job")
        return job

    def list(self, principal: Principal, state: str | None, page_size: int, page_token: str) -> Page[JobRow]:
        listing = f"jobs:{state or ''}"
        after, limit = page_request(page_size, page_token, listing)
        rows = self.store.list_jobs(principal.owner_filter(), state, after, limit + 1)
        return page_of(rows, limit, listing, lambda r: (r.create_time, r.id))

    def cancel(self, job_id: str, principal: Principal) -> JobRow:
        """Cancel a job: a queued one at once (CANCELLED in the reply), a running one at its next
        step (the reply is still RUNNING with ``cancel_requested``; WatchJob shows CANCELLED)."""
        job = self.get(job_id, principal)
        if job.state not in TERMINAL:
            self.runner.cancel(job_id)
        return self.get(job_id, principal)

    def watch(self, job_id: str, principal: Principal, after_event_id: int, is_active=lambda: True,
              poll_s: float = 0.25) -> Iterator[EventRow]:
        """Events after ``after_event_id``, then live ones until the job is finished."""
        self.get(job_id, principal)
        return follow_events(self.store, job_id, lambda: self.store.get_job(job_id).state in TERMINAL,
                             after_event_id, is_active, poll_s)


def resolved(cfg) -> dict:
    """A job's settings with every default filled in, in the API's Hyperparameters names."""
    image = get_task(cfg.task).modality == "image"
    out = {"epochs": cfg.optim.epochs, "learning_rate": cfg.optim.lr, "batch_size": cfg.optim.batch_size,
           "optimizer": cfg.optim.optimizer, "weight_decay": cfg.optim.weight_decay,
           "label_smoothing": cfg.optim.label_smoothing, "early_stopping_patience": cfg.optim.early_stopping_patience,
           "seed": cfg.seed}
    out.update({"image_size": cfg.data.image_size, "augment": cfg.data.augment} if image
               else {"max_length": cfg.data.max_length})
    return out


def _asked(request: dict) -> dict:
    """What a client asked (stored requests also hold what the server resolved from it)."""
    return {k: v for k, v in request.items() if k != "resolved"}


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
