"""GPU assignment: jobs get disjoint GPUs through CUDA_VISIBLE_DEVICES, run side by side when they fit,
wait in order when they do not, and a job on 2 GPUs trains as 2 DDP processes.

This machine has no GPU: the server is told to hand out four ids (``--gpus 0,1,2,3``), which is what
the runner assigns; the processes of a 2-GPU job then train on the CPU (gloo), as they would on the
GPUs they were given.
"""

import threading
import time

import grpc
import pytest

from edgetune.v1 import jobs_pb2
from tests.conftest import write_pattern_folder
from tests.server.conftest import ServerProcess

JOB = dict(base_model="resnet18", weights="random", epochs=40, image_size=32, batch_size=4)
RUNNING, QUEUED = jobs_pb2.JOB_STATE_RUNNING, jobs_pb2.JOB_STATE_QUEUED

pytestmark = pytest.mark.slow


def _wait(predicate, timeout=180, every=0.2, client=None, jobs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for j in jobs:  # fail at once, with the reason, when a job that should run has failed
            job = client.get_job(j.id)
            assert job.state != jobs_pb2.JOB_STATE_FAILED, f"{j.id} failed: {job.error}"
        time.sleep(every)
    raise AssertionError("timed out")


class Logs:
    """A job's log lines, collected by a watcher thread."""

    def __init__(self, server, job_id):
        self.lines: list[str] = []
        self._client = server.client()
        self._thread = threading.Thread(target=self._watch, args=(job_id,), daemon=True)
        self._thread.start()

    def _watch(self, job_id):
        for e in self._client.watch(job_id):
            if e.WhichOneof("kind") == "log":
                self.lines.append(e.log)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def test_jobs_share_the_servers_gpus_without_overlap(tmp_path):
    server = ServerProcess(tmp_path / "data", "--gpus", "0,1,2,3", "--slots", "4").start()
    try:
        client = server.client()
        ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
        for bad in (5, -1):
            with pytest.raises(grpc.RpcError) as e:
                client.create_job(ds.id, gpus=bad, **JOB)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "gpus" in e.value.details()
        a = client.create_job(ds.id, gpus=2, **JOB)
        b = client.create_job(ds.id, gpus=2, **JOB)
        c = client.create_job(ds.id, gpus=0, **{**JOB, "epochs": 1})  # 0: one GPU
        assert (a.gpus, b.gpus, c.gpus) == (2, 2, 1)
        logs = {j.id: Logs(server, j.id) for j in (a, b, c)}
        _wait(lambda: all(client.get_job(j.id).state == RUNNING for j in (a, b)))
        assert client.get_job(c.id).state == QUEUED  # no GPU free: it waits for one
        _wait(lambda: logs[a.id].has("GPU(s) 0,1 of this server") and logs[b.id].has("GPU(s) 2,3 of this server"))
        # Each 2-GPU job is one DDP job of 2 processes.
        _wait(lambda: logs[a.id].has("x 2 processes (DDP)") and logs[b.id].has("x 2 processes (DDP)"))
        _wait(lambda: client.get_job(a.id).epoch >= 1, client=client, jobs=(a, b))
        client.cancel_job(a.id)  # stops both of its processes; its GPUs go to the next job
        _wait(lambda: client.get_job(a.id).state == jobs_pb2.JOB_STATE_CANCELLED, timeout=60)
        _wait(lambda: logs[c.id].has("GPU(s) 0 of this server"))
        _wait(lambda: client.get_job(c.id).state == jobs_pb2.JOB_STATE_SUCCEEDED, timeout=240)
        assert not logs[c.id].has("processes (DDP)")  # one GPU, one process
        client.cancel_job(b.id)
        _wait(lambda: client.get_job(b.id).state == jobs_pb2.JOB_STATE_CANCELLED, timeout=60)
        assert server.proc.poll() is None
    finally:
        server.stop()
