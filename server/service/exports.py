"""Exports: durable jobs that turn a succeeded job's run into a parity-gated bundle.

``create`` checks what can be checked at once (the job, the options, the run's data for the
variants asked) and queues the export, idempotently per (job, options): asking again returns the
queued, running or finished export instead of redoing it. The runner's export workers do the work
(``server/export_worker.py``); ``watch`` streams their progress; a valid export's bundle is
streamed from a tar on disk.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

from edgetune.errors import (EdgetuneError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted,
                             WeightsError, shown)
from edgetune.export.bundle import preflight
from edgetune.export.specs import parse_precisions

from edgetune.server.auth import Principal
from edgetune.server.export_worker import ARTIFACT, write_artifact
from edgetune.server.runner import JobRunner
from edgetune.server.service.paging import Page, page_of, page_request
from edgetune.server.service.jobs import Jobs, follow_events
from edgetune.server.store import FAILED, SUCCEEDED, TERMINAL, EventRow, Store, new_id

ARTIFACT_CHUNK = 1 << 20
MAX_BATCH = 64  # exports per BatchExportModels request


class Exports:
    """Bundles under ``DATA_DIR/exports/<id>/bundle``; a failed gate keeps ``bundle.invalid`` for diagnosis."""

    def __init__(self, store: Store, runner: JobRunner, data_dir: Path, jobs: Jobs, max_queued: int = 32,
                 max_queued_per_principal: int = 16):
        self.store, self.runner, self.data_dir, self.jobs = store, runner, data_dir, jobs
        self.max_queued, self.max_queued_per_principal = max_queued, max_queued_per_principal
        self._artifact_lock = threading.Lock()

    def create(self, principal: Principal, job_id: str, atol: float | None = None, rtol: float | None = None,
               allow_degenerate: bool = False, precisions: list[str] | None = None) -> dict:
        """Queue an export (or return the same one already asked for); raises what the export
        would refuse, before queueing it."""
        job = self.jobs.get(job_id, principal)  # who may, before what is asked
        options = {"precisions": parse_precisions(precisions or []), "allow_degenerate": bool(allow_degenerate),
                   "atol": atol, "rtol": rtol}
        if job.state != SUCCEEDED:
            raise FailedPrecondition("job_id", f"job is {job.state}; only SUCCEEDED jobs can be exported")
        try:
            preflight(self.runner.job_dir(job_id) / "run", options["precisions"], atol, rtol, allow_degenerate)
        except WeightsError as e:
            raise FailedPrecondition("job_id", f"cannot rebuild the job's model: {e.message}") from None
        except FailedPrecondition as e:  # a degenerate model (Job.warnings) without allow_degenerate
            raise FailedPrecondition("precision" if e.subject == "precision" else "job_id", e.message) from None
        key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:32]
        export_id = new_id("exp")
        try:
            # The export belongs to the job's owner (an admin exporting alice's job makes alice's
            # export), so asking again finds it whoever asks.
            row, created = self.store.add_export(
                export_id, job_id, options, key, str(self.runner.export_dir(export_id) / "bundle"), self.max_queued,
                job.owner, None if principal.admin else self.max_queued_per_principal)
        except OverflowError:
            raise ResourceExhausted("queue", f"{self.max_queued} exports are already queued") from None
        except PermissionError:
            raise ResourceExhausted("queue", f"you already have {self.max_queued_per_principal} exports queued "
                                             "(the per-principal quota)") from None
        if created:
            self.runner.wake()
        return row

    def create_many(self, principal: Principal, requests: list[dict]
                    ) -> list[tuple[dict | None, EdgetuneError | None]]:
        """``create`` for each request, independently: one refused never stops the others."""
        if not requests:
            raise InvalidArgument("requests", "at least one export is required")
        if len(requests) > MAX_BATCH:
            raise InvalidArgument("requests", f"at most {MAX_BATCH} per call")
        out = []
        for i, r in enumerate(requests):
            try:
                out.append((self.create(principal, **r), None))
            except EdgetuneError as e:
                out.append((None, type(e)(f"requests[{i}].{e.subject}", e.message)))
        return out

    def get(self, export_id: str, principal: Principal | None = None) -> dict:
        """An export; ``principal`` must own it (None: the inference path, which serves any export)."""
        row = self.store.get_export(export_id)
        if row is None:
            raise NotFound("export_id", f"no export {shown(export_id)}")
        if principal is not None:
            principal.check_owner("export_id", row["owner"], "export")
        return row

    def list(self, principal: Principal, job_id: str, page_size: int, page_token: str) -> Page[dict]:
        listing = f"exports:{job_id}"
        after, limit = page_request(page_size, page_token, listing)
        rows = self.store.list_exports(principal.owner_filter(), job_id or None, after, limit + 1)
        return page_of(rows, limit, listing, lambda r: (r["create_time"], r["id"]))

    def watch(self, export_id: str, principal: Principal, after_event_id: int, is_active=lambda: True,
              poll_s: float = 0.25) -> Iterator[EventRow]:
        """Events after ``after_event_id``, then live ones until the export is finished."""
        self.get(export_id, principal)
        return follow_events(self.store, export_id, lambda: self.get(export_id)["state"] in TERMINAL,
                             after_event_id, is_active, poll_s)

    def artifact_chunks(self, export_id: str, principal: Principal) -> Iterator[tuple[bytes, int, str]]:
        """(data, offset, sha256-on-last) pieces of the bundle's deterministic tar, read from disk."""
        self.get(export_id, principal)
        row = self.valid(export_id)
        path = Path(row["path"]).parent / ARTIFACT
        digest = row["artifact_sha256"]
        if not digest or not path.is_file():  # exports from before the tar was kept: make it once
            with self._artifact_lock:
                row = self.get(export_id)
                digest = row["artifact_sha256"]
                if not digest or not path.is_file():
                    digest, size = write_artifact(Path(row["path"]), path, export_id)
                    self.store.set_artifact(export_id, digest, size)
        with open(path, "rb") as f:
            offset = 0
            while True:
                data = f.read(ARTIFACT_CHUNK)
                nxt = f.peek(1) if hasattr(f, "peek") else b""
                yield data, offset, digest if not nxt else ""
                offset += len(data)
                if not nxt:
                    return

    def valid(self, export_id: str) -> dict:
        row = self.get(export_id)
        if row["state"] != SUCCEEDED or not row["valid"]:
            why = ("export failed: " + (row["error"] or "its parity gate did not pass")
                   if row["state"] == FAILED else f"export is {row['state']}; wait for it to succeed")
            raise FailedPrecondition("export_id", f"{why}; nothing to serve")
        return row
