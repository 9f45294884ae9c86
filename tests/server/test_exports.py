"""Exports are durable jobs: queued at once, idempotent per (job, options), followed by events,
redone after a server dies mid-export, several in one call; bundles streamed from disk."""

import hashlib

import grpc
import pytest

from edgetune.server.store import QUEUED, RUNNING, Store
from edgetune.v1 import exports_pb2, jobs_pb2
from tests.conftest import write_pattern_folder
from tests.server.conftest import ServerProcess

TINY = dict(base_model="resnet18", weights="random", epochs=1, image_size=32, batch_size=8)


def _trained_job(client, tmp_path):
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"), name="patterns")
    job = client.create_job(ds.id, **TINY)
    list(client.watch(job.id))
    assert client.get_job(job.id).state == jobs_pb2.JOB_STATE_SUCCEEDED
    return job


def test_an_export_is_a_job_queued_at_once_and_asked_for_once(server, tmp_path):
    client = server.client()
    job = _trained_job(client, tmp_path)
    queued = client.export(job.id, wait=False)
    assert queued.state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING) and not queued.valid
    assert list(queued.precisions) == ["fp32"]
    again = client.export(job.id, wait=False)  # the same job and options: the same export, not a second one
    assert again.id == queued.id
    other = client.export(job.id, precisions=["fp16"], wait=False)
    assert other.id != queued.id and list(other.precisions) == ["fp32", "fp16"]

    events = list(client.watch_export(queued.id))
    states = [jobs_pb2.JobState.Name(e.state) for e in events if e.WhichOneof("kind") == "state"]
    assert states == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    logs = [e.log for e in events if e.WhichOneof("kind") == "log"]
    assert any(line.startswith("parity PASSED") for line in logs) and all(e.job_id == queued.id for e in events)
    done = client.exports.GetExport(exports_pb2.GetExportRequest(export_id=queued.id), timeout=5)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED and done.valid and done.end_time.seconds > 0
    assert client.export(job.id, wait=False).id == queued.id  # finished: still not redone

    # The artifact is a tar kept on disk: two downloads are the same bytes, its sha256 checked.
    first = client.download(queued.id, tmp_path / "a")
    second = client.download(queued.id, tmp_path / "b")
    assert (first / "model.onnx").read_bytes() == (second / "model.onnx").read_bytes()
    tar = server.data_dir / "exports" / queued.id / "bundle.tar"
    assert tar.is_file() and hashlib.sha256(tar.read_bytes()).hexdigest() == \
        Store(server.data_dir / "edgetune.sqlite").get_export(queued.id)["artifact_sha256"]
    assert client.wait_export(other.id).valid

    # Not done yet: nothing to download or serve.
    pending = client.export(job.id, precisions=["fp16"], atol=0.01, wait=False)
    assert pending.state == jobs_pb2.JOB_STATE_QUEUED
    try:
        client.predict(pending.id, [next((tmp_path / "pat" / "a").glob("*.png")).read_bytes()])
        finished = True  # only if the export won the race against this call
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "wait for it to succeed" in e.details()
        finished = False
    assert client.wait_export(pending.id).valid
    assert not finished or client.exports.GetExport(exports_pb2.GetExportRequest(export_id=pending.id)).valid


def test_batch_export_checks_each_request_on_its_own(server, tmp_path):
    client = server.client()
    job = _trained_job(client, tmp_path)
    response = client.export_many([{"job_id": job.id}, {"job_id": "job-missing"},
                                   {"job_id": job.id, "precisions": ["fp16"]},
                                   {"job_id": job.id, "precisions": ["int4"]},
                                   {"job_id": job.id, "precisions": ["int8"]}])
    codes = [grpc.StatusCode.OK.value[0], grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.OK.value[0],
             grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.FAILED_PRECONDITION.value[0]]
    assert [r.code for r in response.results] == codes
    assert response.results[1].message.startswith("requests[1].job_id: no job")
    assert response.results[3].message.startswith("requests[3].precision: unknown precision 'int4'")
    assert "requests[4].precision: INT8 calibration needs at least 100" in response.results[4].message
    for r in (response.results[0], response.results[2]):
        assert client.wait_export(r.export.id).valid
    with pytest.raises(grpc.RpcError) as err:
        client.export_many([])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "requests" in err.value.details()


def test_an_export_a_dead_server_left_running_is_redone(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = server.client()
        job = _trained_job(client, tmp_path)
    finally:
        server.stop()
    # What a server killed mid-export leaves: a RUNNING export (and half a bundle in a temp folder).
    store = Store(tmp_path / "data" / "edgetune.sqlite")
    row, _ = store.add_export("exp-000000000001", job.id, {"precisions": ["fp32"], "allow_degenerate": False,
                                                           "atol": None, "rtol": None}, "k",
                              str(tmp_path / "data" / "exports" / "exp-000000000001" / "bundle"), 10)
    assert row["state"] == QUEUED and store.set_export_state(row["id"], RUNNING)
    (tmp_path / "data" / "exports" / "exp-000000000001" / ".bundle.half").mkdir(parents=True)
    store.close()
    server = ServerProcess(tmp_path / "data").start()
    try:
        client = server.client()
        done = client.wait_export("exp-000000000001", timeout=300)
        assert done.valid and done.state == jobs_pb2.JOB_STATE_SUCCEEDED
        logs = [e.log for e in client.watch_export(done.id) if e.WhichOneof("kind") == "log"]
        assert any("server restarted while the export was running" in line for line in logs)
    finally:
        server.stop()
