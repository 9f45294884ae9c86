"""Cancel, concurrent watchers, crashed and hung workers, and a server killed (SIGKILL) mid-job."""

import os
import signal
import threading
import time
from pathlib import Path

from edgetune.v1 import jobs_pb2
from tests.conftest import write_pattern_folder
from tests.server.conftest import ServerProcess

SLOW = dict(base_model="resnet18", weights="random", epochs=40, image_size=32, batch_size=4)


def _wait(predicate, timeout=120, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def _epoch_done(client, job_id, n=1):
    return lambda: client.get_job(job_id).epoch >= n


def test_cancel_stops_a_running_job_within_seconds(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    job = client.create_job(ds.id, **SLOW)
    _wait(lambda: client.get_job(job.id).state == jobs_pb2.JOB_STATE_RUNNING)
    t0 = time.monotonic()
    client.cancel_job(job.id)
    _wait(lambda: client.get_job(job.id).state == jobs_pb2.JOB_STATE_CANCELLED, timeout=15)
    assert time.monotonic() - t0 < 15
    # A queued job is cancelled at once; the server keeps serving.
    queued = client.create_job(ds.id, **SLOW)
    assert client.cancel_job(queued.id).state in (jobs_pb2.JOB_STATE_CANCELLED, jobs_pb2.JOB_STATE_RUNNING)
    _wait(lambda: client.get_job(queued.id).state == jobs_pb2.JOB_STATE_CANCELLED, timeout=15)


def test_two_clients_watch_one_job(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    job = client.create_job(ds.id, **{**SLOW, "epochs": 2})
    seen = [[], []]

    def watch(i):
        c = server.client()
        seen[i] = [e.id for e in c.watch(job.id)]
        c.close()

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert seen[0] and seen[0] == seen[1]
    assert client.get_job(job.id).state == jobs_pb2.JOB_STATE_SUCCEEDED


def test_sigkill_mid_job_then_restart_resumes_and_keeps_events(tmp_path):
    data = tmp_path / "data"
    first = ServerProcess(data).start()
    client = first.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    job = client.create_job(ds.id, **{**SLOW, "epochs": 4})
    _wait(_epoch_done(client, job.id, 1))
    history = []
    for e in client.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job.id)):
        history.append(e)
        if e.WhichOneof("kind") == "epoch":
            break
    # Freeze the worker so the job cannot finish before the crash; SIGKILL to the server then takes
    # the worker down too (PR_SET_PDEATHSIG), as a power cut would.
    os.kill(_wait(lambda: _worker_pid(job.id)), signal.SIGSTOP)
    client.close()
    first.kill()

    second = ServerProcess(data).start()
    try:
        client = second.client()
        events = list(client.watch(job.id))
        assert [e.id for e in events[:len(history)]] == [e.id for e in history]  # history intact
        final = client.get_job(job.id)
        assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED, final.error
        assert final.attempts == 1 and final.epoch == 4
        logs = [e.log for e in events if e.WhichOneof("kind") == "log"]
        assert any("server restarted" in m for m in logs) and any("resuming" in m for m in logs)
        epochs = [e.epoch.epoch for e in events if e.WhichOneof("kind") == "epoch"]
        assert epochs[-1] == 4 and sorted(set(epochs)) == [1, 2, 3, 4]
    finally:
        second.stop()


def test_sigterm_requeues_running_jobs_for_the_next_start(tmp_path):
    data = tmp_path / "data"
    first = ServerProcess(data).start()
    client = first.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    job = client.create_job(ds.id, **{**SLOW, "epochs": 3})
    _wait(_epoch_done(client, job.id, 1))
    client.close()
    assert first.stop() == 0
    second = ServerProcess(data).start()
    try:
        client = second.client()
        _wait(lambda: client.get_job(job.id).state == jobs_pb2.JOB_STATE_SUCCEEDED, timeout=180)
        final = client.get_job(job.id)
        assert final.epoch == 3 and final.attempts == 0  # a graceful stop is not a crash
        logs = [e.log for e in client.watch(job.id) if e.WhichOneof("kind") == "log"]
        assert "worker stopped at the server's request" in logs  # it stopped itself, was not killed
    finally:
        second.stop()


def _worker_pid(job_id: str) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"edgetune.server.worker" in cmd and job_id.encode() in cmd:
                return int(proc.name)
    return 0


def test_a_worker_killed_like_by_the_oom_killer_fails_its_job_and_the_server_keeps_serving(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    job = client.create_job(ds.id, **SLOW)
    _wait(_epoch_done(client, job.id, 1))
    os.kill(_wait(lambda: _worker_pid(job.id)), signal.SIGKILL)
    _wait(lambda: client.get_job(job.id).state == jobs_pb2.JOB_STATE_FAILED, timeout=30)
    error = client.get_job(job.id).error
    assert "killed by signal 9" in error and "last log lines" in error
    # The server is fine and runs the next job.
    nxt = client.create_job(ds.id, **{**SLOW, "epochs": 1})
    _wait(lambda: client.get_job(nxt.id).state == jobs_pb2.JOB_STATE_SUCCEEDED, timeout=120)


def test_a_worker_without_progress_is_killed_as_hung(tmp_path):
    # A stall timeout shorter than a worker's start-up: its first event comes too late.
    s = ServerProcess(tmp_path / "data", "--stall-timeout", "0.5").start()
    try:
        client = s.client()
        ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
        job = client.create_job(ds.id, **SLOW)
        _wait(lambda: client.get_job(job.id).state == jobs_pb2.JOB_STATE_FAILED, timeout=60)
        assert "no progress for" in client.get_job(job.id).error
    finally:
        s.stop()
