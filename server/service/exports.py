"""Exports: a succeeded job's run through ``export_bundle`` (parity-gated), its bundle as a download."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edgetune.errors import FailedPrecondition, NotFound, ParityError, WeightsError
from edgetune.export.bundle import export_bundle
from edgetune.export.specs import parse_precisions

from edgetune.server.runner import JobRunner
from edgetune.server.service.config import next_token, page_bounds
from edgetune.server.service.jobs import Jobs
from edgetune.server.store import SUCCEEDED, Store, new_id

ARTIFACT_CHUNK = 1 << 20


class Exports:
    """Bundles under ``DATA_DIR/exports/<id>``; a failed gate keeps its ``bundle.invalid`` for diagnosis."""

    def __init__(self, store: Store, runner: JobRunner, data_dir: Path, jobs: Jobs):
        self.store, self.runner, self.data_dir, self.jobs = store, runner, data_dir, jobs
        self._lock = threading.Lock()

    def create(self, job_id: str, atol: float | None = None, rtol: float | None = None,
               allow_degenerate: bool = False, precisions: list[str] | None = None) -> dict:
        precisions = parse_precisions(precisions or [])  # INVALID_ARGUMENT before any work
        job = self.jobs.get(job_id)
        if job.state != SUCCEEDED:
            raise FailedPrecondition("job_id", f"job is {job.state}; only SUCCEEDED jobs can be exported")
        export_id = new_id("exp")
        out = self.data_dir / "exports" / export_id / "bundle"
        row = {"id": export_id, "job_id": job_id, "create_time": time.time(), "error": "", "path": str(out)}
        with self._lock:  # exports are CPU-heavy; one at a time keeps latency predictable
            try:
                result = export_bundle(self.runner.job_dir(job_id) / "run", out, device="auto", atol=atol, rtol=rtol,
                                       allow_degenerate=allow_degenerate, precisions=precisions, source=job_id)
                row.update(valid=True, manifest=result.manifest)
            except WeightsError as e:  # e.g. the base weights changed since training
                raise FailedPrecondition("job_id", f"cannot rebuild the job's model: {e.message}") from None
            except FailedPrecondition as e:  # a degenerate model (Job.warnings) without allow_degenerate
                raise FailedPrecondition("precision" if e.subject == "precision" else "job_id", e.message) from None
            except ParityError as e:
                invalid = out.with_name(out.name + ".invalid")
                manifest = _read_json(invalid / "manifest.json")
                report = e.report.summary() if e.report is not None else e.message.split("; failed bundle")[0]
                row.update(valid=False, manifest=manifest, error=report, path=str(invalid))
        self.store.add_export(row)
        return self.store.get_export(export_id)

    def get(self, export_id: str) -> dict:
        row = self.store.get_export(export_id)
        if row is None:
            raise NotFound("export_id", f"no export {export_id!r}")
        return row

    def list(self, job_id: str, page_size: int, page_token: str) -> tuple[list[dict], str]:
        offset, limit = page_bounds(page_size, page_token)
        rows = self.store.list_exports(job_id or None, offset, limit)
        return rows, next_token(offset, limit, len(rows))

    def artifact_chunks(self, export_id: str) -> Iterator[tuple[bytes, int, str]]:
        """(data, offset, sha256-on-last) pieces of a deterministic tar of the bundle."""
        row = self.valid(export_id)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            root = Path(row["path"])
            for p in sorted(f for f in root.rglob("*") if f.is_file()):
                info = tf.gettarinfo(str(p), arcname=f"{export_id}/{p.relative_to(root).as_posix()}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o644  # the extracting side applies its umask, as for any file it writes
                with open(p, "rb") as f:
                    tf.addfile(info, f)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        for offset in range(0, len(data), ARTIFACT_CHUNK):
            last = offset + ARTIFACT_CHUNK >= len(data)
            yield data[offset:offset + ARTIFACT_CHUNK], offset, digest if last else ""

    def valid(self, export_id: str) -> dict:
        row = self.get(export_id)
        if not row["valid"]:
            raise FailedPrecondition("export_id", "export failed its parity gate; nothing to serve")
        return row


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

