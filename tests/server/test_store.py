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


def test_exports_from_before_export_jobs_keep_their_verdict(tmp_path):
    """Old rows were finished exports: a valid one reads SUCCEEDED, a failed gate FAILED; new exports
    are idempotent per job and options until one fails."""
    path = tmp_path / "edgetune.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE exports (id TEXT PRIMARY KEY, job_id TEXT NOT NULL, create_time REAL NOT NULL,
            valid INTEGER NOT NULL, manifest TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', path TEXT NOT NULL);
        INSERT INTO exports VALUES ('exp-good', 'job-1', 1.0, 1, '{}', '', '/b');
        INSERT INTO exports VALUES ('exp-bad', 'job-1', 2.0, 0, '{}', 'parity FAILED', '/b.invalid');
    """)
    db.commit()
    db.close()
    store = Store(path)
    assert store.get_export("exp-good")["state"] == "SUCCEEDED" and store.get_export("exp-bad")["state"] == "FAILED"
    assert store.get_export("exp-good")["options"] == {}

    first, created = store.add_export("exp-new", "job-1", {"precisions": ["fp32"]}, "k1", "/x", 10)
    assert created and first["state"] == "QUEUED"
    assert store.add_export("exp-other", "job-1", {"precisions": ["fp32"]}, "k1", "/y", 10) == (first, False)
    assert store.set_export_state("exp-new", "RUNNING") and store.set_export_state("exp-new", "FAILED", "boom")
    assert not store.requeue_export("exp-new", "restart")  # only a RUNNING export goes back to the queue
    retry, created = store.add_export("exp-retry", "job-1", {"precisions": ["fp32"]}, "k1", "/z", 10)
    assert created and retry["id"] == "exp-retry"  # a failed export is retried by asking again
    store.close()
    assert Store(path).get_export("exp-bad")["state"] == "FAILED"  # opening again is a no-op


def test_datasets_from_before_owners_and_quotas_count_their_bytes_and_keep_their_keys(tmp_path):
    path = tmp_path / "edgetune.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL,
            size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, create_time REAL NOT NULL, report TEXT NOT NULL,
            path TEXT NOT NULL);
        INSERT INTO datasets VALUES ('ds-old', 'old', 'zip', 5000, 'x', 1.0, '{}', '/d');
        CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL, dataset_id TEXT NOT NULL,
            idempotency_key TEXT UNIQUE, create_time REAL NOT NULL, start_time REAL, end_time REAL,
            error TEXT NOT NULL DEFAULT '', epoch INTEGER NOT NULL DEFAULT 0, epochs INTEGER NOT NULL DEFAULT 0,
            best TEXT, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, state, request, dataset_id, idempotency_key, create_time)
            VALUES ('job-old', 'QUEUED', '{}', 'ds-old', 'k1', 1.0);
    """)
    db.commit()
    db.close()
    store = Store(path)
    assert store.get_dataset("ds-old")["owner"] == "" and store.stored_bytes("") == 5000
    # The anonymous owner's old key still finds its job; another principal's same key is its own.
    assert store.add_job("job-new", {}, "ds-old", "k1", 1, 10)[0].id == "job-old"
    mine, created = store.add_job("job-bob", {}, "ds-old", "k1", 1, 10, owner="bob")
    assert created and mine.idempotency_key == "k1" and mine.owner == "bob"
    store.close()
