"""Bounded queue, dataset deletion rules, health and reflection, on a real server process."""

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from edgetune.v1 import datasets_pb2, jobs_pb2
from tests.conftest import write_pattern_folder
from tests.server.conftest import ServerProcess

SLOW = dict(base_model="resnet18", weights="random", epochs=40, image_size=32, batch_size=4)


@pytest.fixture
def small_server(tmp_path):
    s = ServerProcess(tmp_path / "data", "--max-queued", "1", "--reflection").start()
    yield s
    s.stop()


def test_queue_bound_and_dataset_in_use(small_server, tmp_path):
    client = small_server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    running = client.create_job(ds.id, **SLOW)
    # One slot: wait until the first job holds it, then one more fits in the queue and no more.
    deadline = time.monotonic() + 60
    while client.get_job(running.id).state != jobs_pb2.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    queued = client.create_job(ds.id, **SLOW)
    with pytest.raises(grpc.RpcError) as e:
        client.create_job(ds.id, **SLOW)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue" in e.value.details()

    with pytest.raises(grpc.RpcError) as e:
        client.datasets.DeleteDataset(datasets_pb2.DeleteDatasetRequest(dataset_id=ds.id))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for job in (queued, running):
        client.cancel_job(job.id)
    deadline = time.monotonic() + 30
    while client.get_job(running.id).state != jobs_pb2.JOB_STATE_CANCELLED and time.monotonic() < deadline:
        time.sleep(0.2)
    client.datasets.DeleteDataset(datasets_pb2.DeleteDatasetRequest(dataset_id=ds.id))
    with pytest.raises(grpc.RpcError) as e:
        client.datasets.GetDataset(datasets_pb2.GetDatasetRequest(dataset_id=ds.id))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(small_server):
    client = small_server.client()
    for name in ("", "edgetune.v1.Jobs", "edgetune.v1.Inference"):
        status = client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(client.channel).get_services())
    assert {"edgetune.v1.Datasets", "edgetune.v1.Jobs", "edgetune.v1.Models", "edgetune.v1.Exports",
            "edgetune.v1.Inference", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= services
    # Reflection v1 (what current grpcurl asks for) answers with the same messages as v1alpha.
    v1 = client.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                      reflection_pb2.ServerReflectionRequest.SerializeToString,
                                      reflection_pb2.ServerReflectionResponse.FromString)
    [listed, symbol] = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                                     reflection_pb2.ServerReflectionRequest(file_containing_symbol="edgetune.v1.Jobs")]),
                               timeout=10))
    assert {s.name for s in listed.list_services_response.service} == services
    assert symbol.file_descriptor_response.file_descriptor_proto


def test_reflection_is_off_by_default(server):
    client = server.client()
    with pytest.raises(grpc.RpcError) as e:
        ProtoReflectionDescriptorDatabase(client.channel).get_services()
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
