"""What a hostile or careless client can send, on a real server process: each case gets its
documented status code naming the field, nothing leaks a server path, and the server keeps serving."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
import time
import zipfile

import grpc
import pytest
from grpc_health.v1 import health_pb2

from edgetune.server.transport.grpc_app import SERVICES
from edgetune.v1 import datasets_pb2, jobs_pb2
from tests.conftest import write_pattern_folder
from tests.server.conftest import ServerProcess, zip_of


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    server = ServerProcess(tmp / "data", "--upload-idle-s", "3").start()
    client = server.client()
    yield server, client, tmp
    client.close()
    server.stop()


def upload(client, data: bytes, fmt, name: str = "d", **header):
    h = datasets_pb2.UploadHeader(name=name, format=fmt, total_size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                  **header)
    return client.upload_bytes(h, data, timeout=60)


def refused(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value


def no_server_path(text: str, server: ServerProcess) -> bool:
    return str(server.data_dir) not in text and "/tmp/" not in text and str(server.data_dir.parent) not in text


def test_bytes_that_are_not_the_request_message_are_invalid_argument(hostile):
    server, client, _ = hostile
    garbage = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256)), b"\x08" * 7]
    for service in SERVICES:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            for data in garbage:
                if method.client_streaming:
                    rpc = client.channel.stream_unary(path, lambda b: b, lambda b: b)
                    err = refused(lambda: rpc(iter([data]), timeout=10))
                elif method.server_streaming:
                    rpc = client.channel.unary_stream(path, lambda b: b, lambda b: b)
                    err = refused(lambda: list(rpc(data, timeout=10)))
                else:
                    rpc = client.channel.unary_unary(path, lambda b: b, lambda b: b)
                    err = refused(lambda: rpc(data, timeout=10))
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, data[:8], err.code(), err.details())
    assert client.list_base_models()


def test_a_long_id_is_echoed_cut_short_and_the_code_stays_not_found(hostile):
    _, client, _ = hostile
    long_id = "job-" + "x" * 20_000
    for fn in (lambda: client.get_job(long_id), lambda: client.cancel_job(long_id), lambda: list(client.watch(long_id)),
               lambda: client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id="\u0000" * 40_000), timeout=5),
               lambda: client.datasets.GetDataset(datasets_pb2.GetDatasetRequest(dataset_id=long_id), timeout=5)):
        err = refused(fn)
        assert err.code() == grpc.StatusCode.NOT_FOUND and len(err.details()) < 400, err.details()[:200]
        assert "20004 characters" in err.details() or "40000 characters" in err.details()


def test_hyperparameters_must_be_finite_and_within_documented_maxima(hostile):
    server, client, tmp = hostile
    ds = client.upload_dataset(write_pattern_folder(tmp / "pat"))
    base = dict(base_model="resnet18", weights="random", image_size=32)
    cases = [({"learning_rate": float("inf")}, "hyperparameters.learning_rate"),
             ({"learning_rate": float("nan")}, "hyperparameters.learning_rate"),
             ({"learning_rate": 11.0}, "hyperparameters.learning_rate"),
             ({"weight_decay": float("inf")}, "hyperparameters.weight_decay"),
             ({"epochs": 2**31 - 1}, "hyperparameters.epochs"),
             ({"batch_size": 2**31 - 1}, "hyperparameters.batch_size"),
             ({"image_size": 2**31 - 1}, "hyperparameters.image_size"),
             ({"early_stopping_patience": 2**31 - 1}, "hyperparameters.early_stopping_patience")]
    for hyper, field in cases:
        err = refused(lambda: client.create_job(ds.id, **{**base, **hyper}))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(field + ":"), \
            (hyper, err.details())
    assert client.list_jobs() == []
    err = refused(lambda: client.create_job(ds.id, idempotency_key="bob\nk", **base))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("idempotency_key:")


def test_page_tokens_are_opaque_keyset_tokens(hostile):
    server, client, tmp = hostile
    rows = [json.dumps({"text": f"row {i} {c}", "label": c}) for i in range(30) for c in ("ham", "spam")]
    data = "\n".join(rows).encode()
    for i in range(3):
        upload(client, data + b"\n" * (i + 1), datasets_pb2.DATASET_FORMAT_JSONL, name=f"t{i}")
    huge = base64.urlsafe_b64encode(json.dumps(["v1", "datasets", int("9" * 320), "ds-x"]).encode()).decode()
    for token in (" 1", "1_0", "\u0663", "1", "0", "x" * 600, "eyJ2MSJ9", huge.rstrip("=")):
        err = refused(lambda: client.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest(page_token=token),
                                                          timeout=5))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("page_token:"), token
    # Page by page with an upload in between: no item twice, none skipped, the last token empty.
    first = client.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=1), timeout=5)
    upload(client, data + b"\n" * 9, datasets_pb2.DATASET_FORMAT_JSONL, name="late")
    seen, token = [d.id for d in first.datasets], first.next_page_token
    while token:
        page = client.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=1, page_token=token),
                                            timeout=5)
        seen += [d.id for d in page.datasets]
        token = page.next_page_token
    everything = client.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=500), timeout=5)
    assert everything.next_page_token == ""
    assert len(seen) == len(set(seen)) and set(seen) == {d.id for d in everything.datasets if d.name != "late"}
    # A token from one listing is refused by another.
    jobs_token = client.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest(page_size=1), timeout=5)
    err = refused(lambda: client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token=jobs_token.next_page_token),
                                               timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_labels_are_bounded_before_a_dataset_is_stored(hostile):
    server, client, _ = hostile
    rows = "\n".join(json.dumps({"text": f"t{i}", "label": f"{i:04d}" + "x" * 996}) for i in range(9000)).encode()
    err = refused(lambda: upload(client, rows, datasets_pb2.DATASET_FORMAT_JSONL, name="many-labels"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "label" in err.details()
    assert all(d.name != "many-labels" for d in client.datasets.ListDatasets(
        datasets_pb2.ListDatasetsRequest(page_size=500), timeout=5).datasets)


def test_archive_problems_name_the_entry_and_never_a_server_path(hostile):
    server, client, tmp = hostile
    pattern = write_pattern_folder(tmp / "pat2")
    pngs = {f"{c}/{p.name}": p.read_bytes() for c in ("a", "b", "c") for p in sorted((pattern / c).glob("*.png"))}
    tar_nul = io.BytesIO()
    with tarfile.open(fileobj=tar_nul, mode="w:gz") as tf:
        info = tarfile.TarInfo("a/x\0y.png")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    cases = [(zip_of({}), datasets_pb2.DATASET_FORMAT_ZIP),
             (zip_of({"only.png": pngs["a/0.png"] if "a/0.png" in pngs else next(iter(pngs.values()))}),
              datasets_pb2.DATASET_FORMAT_ZIP),
             (zip_of({f"{'n' * 300}/x.png": b"x"}), datasets_pb2.DATASET_FORMAT_ZIP),
             (tar_nul.getvalue(), datasets_pb2.DATASET_FORMAT_TAR_GZ)]
    for data, fmt in cases:
        err = refused(lambda: upload(client, data, fmt))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert no_server_path(err.details(), server), err.details()
    # A top folder named like an archive is a folder.
    ds = upload(client, zip_of({f"d.zip/{k}": v for k, v in pngs.items()}), datasets_pb2.DATASET_FORMAT_ZIP)
    assert [c.label for c in ds.report.classes] == ["a", "b", "c"]


def test_a_zip_bomb_is_refused_from_its_headers(hostile):
    server, client, _ = hostile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("a/bomb.png", "w") as f:
        block = b"\0" * (1 << 20)
        for _ in range(300):
            f.write(block)
    data = buf.getvalue()
    assert len(data) < 1_000_000
    err = refused(lambda: upload(client, data, datasets_pb2.DATASET_FORMAT_ZIP))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ratio" in err.details(), err.details()
    assert not any(server.data_dir.joinpath("datasets").rglob("bomb.png"))


def test_silent_uploads_never_starve_health_and_time_out(hostile):
    server, client, _ = hostile
    release = threading.Event()
    header = datasets_pb2.UploadDatasetRequest(header=datasets_pb2.UploadHeader(
        name="slow", format=datasets_pb2.DATASET_FORMAT_JSONL, total_size=10, sha256="0" * 64))

    def silent():
        yield header
        release.wait(30)

    outcomes: list = []

    def hold():
        try:
            client.datasets.UploadDataset(silent(), timeout=30)
        except grpc.RpcError as e:
            outcomes.append(e.code())

    threads = [threading.Thread(target=hold) for _ in range(70)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    for _ in range(5):  # every slot is held, health still answers at once
        assert client.health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
            health_pb2.HealthCheckResponse.SERVING
    assert time.monotonic() - t0 < 2
    for t in threads:
        t.join(20)
    release.set()
    assert len(outcomes) == 70
    assert set(outcomes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert outcomes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 56  # the slots; the rest were refused at once
    assert client.list_base_models()  # slots given back


def test_health_watches_have_their_own_few_slots(hostile):
    server, client, _ = hostile
    streams = [client.health.Watch(health_pb2.HealthCheckRequest()) for _ in range(6)]
    first = []
    for s in streams:
        try:
            first.append(next(s).status)
        except grpc.RpcError as e:
            first.append(e.code())
    assert first.count(health_pb2.HealthCheckResponse.SERVING) == 4
    assert first.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2
    assert client.list_base_models() and client.health.Check(health_pb2.HealthCheckRequest(), timeout=2).status \
        == health_pb2.HealthCheckResponse.SERVING
    for s in streams:
        s.cancel()


def test_a_broken_operator_catalog_is_the_servers_fault_and_its_path_stays_on_the_server(tmp_path):
    catalog = tmp_path / "operator" / "catalog.yaml"
    catalog.parent.mkdir()
    catalog.write_text("models:\n  mine: {arch: no_such_arch, path: /nowhere}\n")
    server = ServerProcess(tmp_path / "data", env={"EDGETUNE_CATALOG": str(catalog)}).start()
    try:
        client = server.client()
        ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
        for call in (lambda: client.create_job(ds.id, base_model="resnet18", weights="random", image_size=32),
                     client.list_base_models):
            err = refused(call)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "catalog" in err.details()
            assert str(catalog.parent) not in err.details() and "/" not in err.details().split("(")[0]
        client.close()
    finally:
        server.stop()
    assert str(catalog) in server.log.read_text()  # the operator's log has it
