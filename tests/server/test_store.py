"""The embedded store: a database made by an earlier version gains the new columns on open."""

import sqlite3

from edgetune.server.store import Store


def test_an_older_store_is_migrated_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "edgetune.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL, dataset_id TEXT NOT NULL,
            idempotency_key TEXT UNIQUE, create_time REAL NOT NULL, start_time REAL, end_time REAL,
            error TEXT NOT NULL DEFAULT '', epoch INTEGER NOT NULL DEFAULT 0, epochs INTEGER NOT NULL DEFAULT 0,
            best TEXT, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, state, request, dataset_id, create_time) VALUES ('job-old', 'SUCCEEDED', '{}', 'ds-1', 1.0);
    """)
    db.commit()
    db.close()

    store = Store(path)
    job = store.get_job("job-old")
    assert job.state == "SUCCEEDED" and job.warnings == []
    store.set_warnings("job-old", ["degenerate model: something"])
    store.close()
    assert Store(path).get_job("job-old").warnings == ["degenerate model: something"]  # opening again is a no-op
