"""The embedded store: one SQLite file (WAL, synchronous=FULL) for datasets, jobs, events, exports.

Exports are durable jobs too (QUEUED -> RUNNING -> SUCCEEDED or FAILED); their events share the
events table, keyed by the export's id.

The server process and each job's worker process open their own connection; SQLite serialises
the writers. Rows hold JSON documents for the parts that only the service layer interprets.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL, create_time REAL NOT NULL, report TEXT NOT NULL, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL, dataset_id TEXT NOT NULL,
    idempotency_key TEXT UNIQUE, create_time REAL NOT NULL, start_time REAL, end_time REAL,
    error TEXT NOT NULL DEFAULT '', epoch INTEGER NOT NULL DEFAULT 0, epochs INTEGER NOT NULL DEFAULT 0,
    best TEXT, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
    warnings TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, create_time);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, time REAL NOT NULL,
    kind TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, create_time REAL NOT NULL, valid INTEGER NOT NULL,
    manifest TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', path TEXT NOT NULL);
"""
# Resources belong to the principal that made them ('' when the server runs without auth).
OWNER_COLUMN = "TEXT NOT NULL DEFAULT ''"
# Exports became durable jobs of their own: rows from before are finished exports.
EXPORT_COLUMNS = {"state": "TEXT NOT NULL DEFAULT 'SUCCEEDED'", "options": "TEXT NOT NULL DEFAULT '{}'",
                  "options_key": "TEXT NOT NULL DEFAULT ''", "start_time": "REAL", "end_time": "REAL",
                  "attempts": "INTEGER NOT NULL DEFAULT 0", "artifact_sha256": "TEXT NOT NULL DEFAULT ''",
                  "artifact_bytes": "INTEGER NOT NULL DEFAULT 0"}

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass
class JobRow:
    id: str
    state: str
    request: dict
    dataset_id: str
    idempotency_key: str | None
    create_time: float
    start_time: float | None
    end_time: float | None
    error: str
    epoch: int
    epochs: int
    best: dict | None
    attempts: int
    cancel_requested: bool
    warnings: list[str]
    owner: str = ""


@dataclass
class EventRow:
    id: int
    job_id: str
    time: float
    kind: str  # "state" | "epoch" | "step" | "log"
    payload: dict


class Store:
    """Thread-safe access to the SQLite file; one connection per Store."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)  # idempotent; executescript manages its own transaction
        self._db.execute("BEGIN IMMEDIATE")  # a migration is all or nothing (SQLite DDL is transactional)
        try:
            self._migrate()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        """Columns added after a store was first created (CREATE TABLE IF NOT EXISTS keeps old tables)."""
        added = {"jobs": {"warnings": "TEXT NOT NULL DEFAULT '[]'", "owner": OWNER_COLUMN},
                 "datasets": {"owner": OWNER_COLUMN, "stored_bytes": "INTEGER NOT NULL DEFAULT 0"}}
        for table, new in added.items():
            columns = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, decl in new.items():
                if name not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                    if name == "stored_bytes":  # datasets from before quotas: at least what was uploaded
                        self._db.execute("UPDATE datasets SET stored_bytes = size_bytes")
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(exports)")}
        for name, decl in {**EXPORT_COLUMNS, "owner": OWNER_COLUMN}.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE exports ADD COLUMN {name} {decl}")
                if name == "state":  # an old export either passed its gate or failed it
                    self._db.execute("UPDATE exports SET state = ? WHERE valid = 0", (FAILED,))
        self._db.execute("CREATE INDEX IF NOT EXISTS exports_state ON exports(state, create_time)")
        self._db.execute("CREATE INDEX IF NOT EXISTS exports_key ON exports(job_id, options_key)")
        for table in ("datasets", "jobs", "exports"):  # the List RPCs' keyset order, per owner or all
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}_owner ON {table}(owner, create_time, id)")
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}_time ON {table}(create_time, id)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # datasets
    def add_dataset(self, row: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO datasets (id, name, format, size_bytes, sha256, create_time, report, path, owner, "
                       "stored_bytes) VALUES (:id, :name, :format, :size_bytes, :sha256, :create_time, :report, :path, "
                       ":owner, :stored_bytes)",
                       {"owner": "", "stored_bytes": 0, **row, "report": json.dumps(row["report"])})

    def get_dataset(self, dataset_id: str) -> dict | None:
        rows = self._query("SELECT * FROM datasets WHERE id = ?", (dataset_id,))
        return _dataset(rows[0]) if rows else None

    def list_datasets(self, owner: str | None, after: tuple[float, str] | None, limit: int) -> list[dict]:
        return [_dataset(r) for r in self._page("datasets", {"owner": owner}, after, limit)]

    def stored_bytes(self, owner: str) -> int:
        """What ``owner``'s datasets hold on disk (their storage quota's use)."""
        return self._query("SELECT COALESCE(SUM(stored_bytes), 0) FROM datasets WHERE owner = ?", (owner,))[0][0]

    def _page(self, table: str, where: dict, after: tuple[float, str] | None, limit: int) -> list[sqlite3.Row]:
        """Rows newest first (keyset: strictly after ``after`` = (create_time, id) of the last row
        seen, so rows added between two pages neither repeat nor shift the next page)."""
        conds = [f"{k} = ?" for k, v in where.items() if v is not None]
        args = [v for v in where.values() if v is not None]
        if after is not None:
            conds.append("(create_time, id) < (?, ?)")
            args.extend(after)
        sql = f"SELECT * FROM {table} {'WHERE ' + ' AND '.join(conds) if conds else ''} " \
              "ORDER BY create_time DESC, id DESC LIMIT ?"
        return self._query(sql, (*args, limit))

    def delete_dataset_if_unused(self, dataset_id: str) -> bool:
        """Delete unless a queued or running job uses it (checked in the same transaction)."""
        with self.transaction() as db:
            used = db.execute("SELECT COUNT(*) FROM jobs WHERE dataset_id = ? AND state IN (?, ?)",
                              (dataset_id, QUEUED, RUNNING)).fetchone()[0]
            if not used:
                db.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))
            return not used

    def dataset_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT id FROM datasets")}

    # jobs
    def add_job(self, job_id: str, request: dict, dataset_id: str, idempotency_key: str | None, epochs: int,
                max_queued: int, owner: str = "", max_queued_per_owner: int | None = None) -> tuple[JobRow, bool]:
        """Insert a QUEUED job. Returns (job, created); ``owner``'s existing key returns (that job, False).

        Raises OverflowError when ``max_queued`` jobs are already waiting, PermissionError when
        ``owner`` already has ``max_queued_per_owner`` waiting.
        """
        key = _owned_key(owner, idempotency_key)
        with self.transaction() as db:
            if key:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
                if row:
                    return _job(row), False
            if db.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset_id,)).fetchone() is None:
                raise LookupError(dataset_id)
            queued = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()[0]
            if queued >= max_queued:
                raise OverflowError(queued)
            if max_queued_per_owner is not None and db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state = ? AND owner = ?", (QUEUED, owner)).fetchone()[0] \
                    >= max_queued_per_owner:
                raise PermissionError(owner)
            now = time.time()
            db.execute("INSERT INTO jobs (id, state, request, dataset_id, idempotency_key, create_time, epochs, owner) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, QUEUED, json.dumps(request, sort_keys=True), dataset_id, key, now, epochs, owner))
            _insert_event(db, job_id, "state", {"state": QUEUED})
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()), True

    def get_job(self, job_id: str) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def list_jobs(self, owner: str | None, state: str | None, after: tuple[float, str] | None,
                  limit: int) -> list[JobRow]:
        return [_job(r) for r in self._page("jobs", {"owner": owner, "state": state}, after, limit)]

    def next_queued(self) -> JobRow | None:
        rows = self._query("SELECT * FROM jobs WHERE state = ? ORDER BY create_time, id LIMIT 1", (QUEUED,))
        return _job(rows[0]) if rows else None

    def set_state(self, job_id: str, state: str, error: str = "", only_from: tuple[str, ...] = ()) -> bool:
        """Move a job to ``state`` (recording a state event). Returns False when ``only_from`` does
        not hold the current state."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or (only_from and row["state"] not in only_from):
                return False
            now = time.time()
            sets = {"state": state, "error": error}
            if state == RUNNING:
                sets["start_time"] = now
            if state in TERMINAL:
                sets["end_time"] = now
            db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                       (*sets.values(), job_id))
            _insert_event(db, job_id, "state", {"state": state, "error": error})
            return True

    def requeue(self, job_id: str, reason: str, count_attempt: bool = True) -> None:
        """Back to QUEUED; ``count_attempt`` for restarts after a crash (graceful stops don't count)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, attempts = attempts + ? WHERE id = ?",
                       (QUEUED, int(count_attempt), job_id))
            _insert_event(db, job_id, "log", {"message": reason})
            _insert_event(db, job_id, "state", {"state": QUEUED})

    def request_cancel(self, job_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def record_epoch(self, job_id: str, metrics: dict, best: bool) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET epoch = ? WHERE id = ?", (metrics["epoch"], job_id))
            if best:
                db.execute("UPDATE jobs SET best = ? WHERE id = ?", (json.dumps(metrics), job_id))
            _insert_event(db, job_id, "epoch", metrics)

    def set_warnings(self, job_id: str, warnings: list[str]) -> None:
        """What a finished job's user must know before exporting (e.g. a degenerate model)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET warnings = ? WHERE id = ?", (json.dumps(warnings), job_id))

    def last_activity(self, job_id: str) -> float:
        """Time of the job's latest event (workers write one at least every few seconds of training)."""
        rows = self._query("SELECT MAX(time) FROM events WHERE job_id = ?", (job_id,))
        return rows[0][0] or 0.0

    # events
    def add_event(self, job_id: str, kind: str, payload: dict) -> int:
        with self.transaction() as db:
            return _insert_event(db, job_id, kind, payload)

    def events_after(self, job_id: str, after_id: int, limit: int = 500) -> list[EventRow]:
        rows = self._query("SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                           (job_id, after_id, limit))
        return [EventRow(r["id"], r["job_id"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    # exports
    def add_export(self, export_id: str, job_id: str, options: dict, options_key: str, path: str,
                   max_queued: int, owner: str = "", max_queued_per_owner: int | None = None) -> tuple[dict, bool]:
        """A QUEUED export, or (idempotent per job and options) the one already queued, running or
        succeeded: returns (export, created). A failed one is retried by asking again.

        Raises OverflowError when ``max_queued`` exports are already waiting, PermissionError when
        ``owner`` already has ``max_queued_per_owner`` waiting."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM exports WHERE job_id = ? AND options_key = ? AND state != ? "
                             "ORDER BY create_time DESC LIMIT 1", (job_id, options_key, FAILED)).fetchone()
            if row:
                return _export(row), False
            queued = db.execute("SELECT COUNT(*) FROM exports WHERE state = ?", (QUEUED,)).fetchone()[0]
            if queued >= max_queued:
                raise OverflowError(queued)
            if max_queued_per_owner is not None and db.execute(
                    "SELECT COUNT(*) FROM exports WHERE state = ? AND owner = ?", (QUEUED, owner)).fetchone()[0] \
                    >= max_queued_per_owner:
                raise PermissionError(owner)
            db.execute("INSERT INTO exports (id, job_id, create_time, valid, manifest, error, path, state, options, "
                       "options_key, owner) VALUES (?, ?, ?, 0, '{}', '', ?, ?, ?, ?, ?)",
                       (export_id, job_id, time.time(), path, QUEUED, json.dumps(options, sort_keys=True),
                        options_key, owner))
            _insert_event(db, export_id, "state", {"state": QUEUED})
            return _export(db.execute("SELECT * FROM exports WHERE id = ?", (export_id,)).fetchone()), True

    def next_queued_export(self) -> dict | None:
        rows = self._query("SELECT * FROM exports WHERE state = ? ORDER BY create_time, id LIMIT 1", (QUEUED,))
        return _export(rows[0]) if rows else None

    def set_export_state(self, export_id: str, state: str, error: str = "", only_from: tuple[str, ...] = (),
                         **fields) -> bool:
        """Move an export to ``state`` with a state event; ``fields``: valid, manifest, path,
        artifact_sha256, artifact_bytes. False when ``only_from`` does not hold the current state."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM exports WHERE id = ?", (export_id,)).fetchone()
            if row is None or (only_from and row["state"] not in only_from):
                return False
            sets = {"state": state, "error": error, **fields}
            if "manifest" in sets:
                sets["manifest"] = json.dumps(sets["manifest"])
            if "valid" in sets:
                sets["valid"] = int(sets["valid"])
            if state == RUNNING:
                sets["start_time"] = time.time()
            if state in TERMINAL:
                sets["end_time"] = time.time()
            db.execute(f"UPDATE exports SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                       (*sets.values(), export_id))
            _insert_event(db, export_id, "state", {"state": state, "error": error})
            return True

    def requeue_export(self, export_id: str, reason: str, count_attempt: bool = True) -> bool:
        """Back to QUEUED, only from RUNNING (an export whose worker recorded its outcome stays done)."""
        with self.transaction() as db:
            cur = db.execute("UPDATE exports SET state = ?, attempts = attempts + ? WHERE id = ? AND state = ?",
                             (QUEUED, int(count_attempt), export_id, RUNNING))
            if not cur.rowcount:
                return False
            _insert_event(db, export_id, "log", {"message": reason})
            _insert_event(db, export_id, "state", {"state": QUEUED})
            return True

    def counts_by_state(self, table: str) -> dict[str, int]:
        """Rows of ``jobs`` or ``exports`` per state."""
        assert table in ("jobs", "exports")
        return {r[0]: r[1] for r in self._query(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")}

    def durations(self, table: str, bounds: tuple[float, ...]) -> dict[str, tuple[list[int], int, float]]:
        """Per final state of the finished jobs or exports that started: (how many took at most each
        of ``bounds`` seconds, how many in all, their total seconds), counted by SQLite."""
        assert table in ("jobs", "exports")
        took = "MAX(end_time - start_time, 0)"
        cells = ", ".join(f"SUM({took} <= {float(b)!r})" for b in bounds)
        rows = self._query(f"SELECT state, COUNT(*), SUM({took}){', ' + cells if cells else ''} FROM {table} "
                           "WHERE end_time IS NOT NULL AND start_time IS NOT NULL GROUP BY state")
        return {r[0]: ([int(c) for c in r[3:]], r[1], float(r[2])) for r in rows}

    def jobs_in(self, state: str) -> list[JobRow]:
        return [_job(r) for r in self._query("SELECT * FROM jobs WHERE state = ? ORDER BY create_time", (state,))]

    def exports_in(self, state: str) -> list[dict]:
        return [_export(r) for r in self._query("SELECT * FROM exports WHERE state = ? ORDER BY create_time",
                                                (state,))]

    def set_artifact(self, export_id: str, sha256: str, size: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE exports SET artifact_sha256 = ?, artifact_bytes = ? WHERE id = ?",
                       (sha256, size, export_id))

    def get_export(self, export_id: str) -> dict | None:
        rows = self._query("SELECT * FROM exports WHERE id = ?", (export_id,))
        return _export(rows[0]) if rows else None

    def list_exports(self, owner: str | None, job_id: str | None, after: tuple[float, str] | None,
                     limit: int) -> list[dict]:
        return [_export(r) for r in self._page("exports", {"owner": owner, "job_id": job_id}, after, limit)]


def _insert_event(db: sqlite3.Connection, job_id: str, kind: str, payload: dict) -> int:
    cur = db.execute("INSERT INTO events (job_id, time, kind, payload) VALUES (?, ?, ?, ?)",
                     (job_id, time.time(), kind, json.dumps(payload)))
    return cur.lastrowid


def _dataset(r: sqlite3.Row) -> dict:
    return {**dict(r), "report": json.loads(r["report"])}


def _export(r: sqlite3.Row) -> dict:
    return {**dict(r), "manifest": json.loads(r["manifest"]), "valid": bool(r["valid"]),
            "options": json.loads(r["options"])}


def _owned_key(owner: str, key: str | None) -> str | None:
    """Idempotency keys are per principal: stored as ``owner\\nkey`` (names hold no newline)."""
    return (f"{owner}\n{key}" if owner else key) if key else None


def _job(r: sqlite3.Row) -> JobRow:
    key = r["idempotency_key"]
    return JobRow(r["id"], r["state"], json.loads(r["request"]), r["dataset_id"], key and key.split("\n")[-1],
                  r["create_time"], r["start_time"], r["end_time"], r["error"], r["epoch"], r["epochs"],
                  json.loads(r["best"]) if r["best"] else None, r["attempts"], bool(r["cancel_requested"]),
                  json.loads(r["warnings"]), r["owner"])
