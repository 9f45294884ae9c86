"""Authentication, scopes, ownership and TLS on a real server process over real sockets.

Certificates are made at test time (``tests/server/certs.py``); tokens with ``edgetune token add``.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from edgetune.oip import grpc_predict_v2_pb2 as oip
from edgetune.server.transport.client import EdgetuneClient
from edgetune.server.transport.grpc_app import SERVICES
from edgetune.v1 import datasets_pb2, exports_pb2, inference_pb2, jobs_pb2, models_pb2
from tests.server.certs import CA
from tests.server.conftest import PRINCIPALS, ServerProcess, add_token, client_for



def call(channel, service, method, request):
    """Any RPC by its descriptor: the reply (first message of a stream), or the RpcError."""
    path = f"/{service.full_name}/{method.name}"
    ser, de = type(request).SerializeToString, lambda b: b
    try:
        if method.client_streaming and method.server_streaming:
            return next(iter(channel.stream_stream(path, ser, de)(iter([request]), timeout=20)), None)
        if method.client_streaming:
            return channel.stream_unary(path, ser, de)(iter([request]), timeout=20)
        if method.server_streaming:
            return next(iter(channel.unary_stream(path, ser, de)(request, timeout=20)), None)
        return channel.unary_unary(path, ser, de)(request, timeout=20)
    except grpc.RpcError as e:
        return e


def requests_for(env, mine: bool) -> dict[str, object]:
    """A request per RPC: on alice's resources (``mine``) or on ids that do not exist."""
    d, j, x = (env["dataset"].id, env["job"].id, env["export"].id) if mine else ("ds-none", "job-none", "exp-none")
    return {
        "UploadDataset": datasets_pb2.UploadDatasetRequest(header=datasets_pb2.UploadHeader(
            name="x", format=datasets_pb2.DATASET_FORMAT_JSONL, total_size=1, sha256="0" * 64)),
        "GetDataset": datasets_pb2.GetDatasetRequest(dataset_id=d),
        "ListDatasets": datasets_pb2.ListDatasetsRequest(),
        "DeleteDataset": datasets_pb2.DeleteDatasetRequest(dataset_id=d if not mine else "ds-none"),
        "CreateJob": jobs_pb2.CreateJobRequest(dataset_id=d, task=jobs_pb2.TASK_IMAGE_CLASSIFICATION,
                                               method=jobs_pb2.METHOD_FULL, base_model="resnet18",
                                               weights="random", hyperparameters=jobs_pb2.Hyperparameters(
                                                   epochs=1, image_size=10)),
        "GetJob": jobs_pb2.GetJobRequest(job_id=j),
        "ListJobs": jobs_pb2.ListJobsRequest(),
        "CancelJob": jobs_pb2.CancelJobRequest(job_id=j),
        "WatchJob": jobs_pb2.WatchJobRequest(job_id=j),
        "ListBaseModels": models_pb2.ListBaseModelsRequest(),
        "ExportModel": exports_pb2.ExportModelRequest(job_id=j, precisions=["int4"]),
        "BatchExportModels": exports_pb2.BatchExportModelsRequest(requests=[]),
        "WatchExport": exports_pb2.WatchExportRequest(export_id=x),
        "GetExport": exports_pb2.GetExportRequest(export_id=x),
        "ListExports": exports_pb2.ListExportsRequest(),
        "DownloadArtifact": exports_pb2.DownloadArtifactRequest(export_id=x),
        "Predict": inference_pb2.PredictRequest(export_id=x, images=[env["image"]]),
        "Generate": inference_pb2.GenerateRequest(export_id=x, prompt="hi"),
        "ServerLive": oip.ServerLiveRequest(), "ServerReady": oip.ServerReadyRequest(),
        "ServerMetadata": oip.ServerMetadataRequest(), "ModelReady": oip.ModelReadyRequest(name=x),
        "ModelMetadata": oip.ModelMetadataRequest(name=x),
        "ModelInfer": oip.ModelInferRequest(model_name=x, inputs=[oip.ModelInferRequest.InferInputTensor(
            name="image", datatype="BYTES", shape=[1], contents=oip.InferTensorContents(bytes_contents=[env["image"]]))]),
    }


# Every other service needs "jobs".
SCOPE = {"edgetune.v1.Inference": "inference", "inference.GRPCInferenceService": "inference"}
PROBES = {"ServerLive", "ServerReady"}
OWNED = {"GetDataset", "CreateJob", "GetJob", "CancelJob", "WatchJob", "ExportModel", "WatchExport", "GetExport",
         "DownloadArtifact"}  # on another principal's resource: PERMISSION_DENIED without admin


def test_every_rpc_by_token_scope_and_owner(secured):
    env = secured
    methods = [(s, m) for s in SERVICES for m in s.methods]
    assert {m.name for _, m in methods} == set(requests_for(env, False)), "a new RPC needs a row in this matrix"
    clients = {name: client_for(env, name) for name in (None, *PRINCIPALS)}
    for service, method in methods:
        scope = SCOPE.get(service.full_name, "jobs")
        wrong = "dev" if scope == "jobs" else "bob"
        right = "alice"
        absent = requests_for(env, False)[method.name]
        got = {who: call(clients[who].channel, service, method, absent) for who in (None, wrong, right, "root")}
        label = f"{service.name}.{method.name}"
        if method.name in PROBES:  # liveness and readiness answer anyone
            assert not any(isinstance(r, grpc.RpcError) for r in got.values()), (label, got)
            continue
        assert isinstance(got[None], grpc.RpcError) and got[None].code() == grpc.StatusCode.UNAUTHENTICATED, label
        assert got[wrong].code() == grpc.StatusCode.PERMISSION_DENIED and got[wrong].details() == \
            f"authorization: {service.full_name}/{method.name} needs the {scope!r} scope (this token has " \
            f"{PRINCIPALS[wrong]})", label
        for who in (right, "root"):
            r = got[who]
            assert not isinstance(r, grpc.RpcError) or r.code() not in (
                grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNKNOWN), (label, who, r)
        if method.name in OWNED:
            owned = requests_for(env, True)[method.name]
            other = call(clients["bob"].channel, service, method, owned)
            assert isinstance(other, grpc.RpcError) and other.code() == grpc.StatusCode.PERMISSION_DENIED, label
            assert "another principal" in other.details(), label
            if method.name not in ("CancelJob",):
                mine = call(clients["root"].channel, service, method, owned)
                assert not isinstance(mine, grpc.RpcError) or mine.code() not in (
                    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (label, mine)

    # Inference serves any finished export: a device token owns nothing and still predicts.
    result = clients["dev"].predict(env["export"].id, [env["image"]], top_k=1)
    assert len(result) == 1 and result[0].top[0].label in ("a", "b", "c")
    # Lists show the caller's own resources; an admin sees everyone's.
    assert [j.id for j in clients["alice"].list_jobs()] == [env["job"].id]
    assert clients["bob"].list_jobs() == [] and [j.id for j in clients["root"].list_jobs()] == [env["job"].id]
    assert clients["alice"].get_job(env["job"].id).owner == "alice"
    # What alice's job and export logged reaches her without any path of the server.
    events = [*clients["alice"].watch(env["job"].id), *clients["alice"].watch_export(env["export"].id)]
    logs = [e.log for e in events if e.WhichOneof("kind") == "log"]
    assert len(logs) > 3 and not [line for line in logs if str(env["tmp"]) in line or "/tmp/" in line]
    # An admin exporting alice's job asks for alice's export: the same one, still hers.
    again = clients["root"].export(env["job"].id, wait=False)
    assert again.id == env["export"].id and again.owner == "alice"
    # Health answers without a token; reflection needs one.
    assert clients[None].health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    for c in clients.values():
        c.close()


def test_errors_carry_field_violations_beside_the_message(secured):
    alice = client_for(secured, "alice")
    with pytest.raises(grpc.RpcError) as e:
        alice.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token="\u0663"), timeout=5)
    status = rpc_status.from_call(e.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and status.message == e.value.details()
    violation = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violation) and violation.field_violations[0].field == "page_token"
    assert violation.field_violations[0].description in e.value.details()
    alice.close()


def test_tls_is_required_and_a_renewed_certificate_is_served_without_restart(secured, tmp_path):
    env = secured
    plain = EdgetuneClient(env["server"].target, token=env["tokens"]["alice"])
    with pytest.raises(grpc.RpcError) as e:
        plain.list_base_models()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    plain.close()

    # Rotate to a certificate from another CA: new connections get it, no restart.
    other = CA(tmp_path / "pki2", "rotated CA")
    fresh = other.issue("server2", "localhost", server=True)
    server_cert = env["tmp"] / "pki" / "server.crt"
    old = (server_cert.read_bytes(), (env["tmp"] / "pki" / "server.key").read_bytes())
    try:
        shutil.copy(fresh.key, env["tmp"] / "pki" / "server.key")
        shutil.copy(fresh.cert, server_cert)
        rotated = EdgetuneClient(env["server"].target, token=env["tokens"]["alice"], tls_ca=other.pem,
                                 server_name="localhost")
        assert rotated.list_base_models()
        rotated.close()
        stale = client_for(env, "alice")
        with pytest.raises(grpc.RpcError) as e:
            stale.list_base_models()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        stale.close()
    finally:
        server_cert.write_bytes(old[0])
        (env["tmp"] / "pki" / "server.key").write_bytes(old[1])
        time.sleep(0.01)
    again = client_for(env, "alice")
    assert again.list_base_models()
    again.close()


def test_a_token_added_while_serving_works_at_once(secured):
    env = secured
    token = add_token(env["tmp"] / "tokens.yaml", "carol", "inference")
    time.sleep(1.1)  # the file is looked at once a second
    carol = EdgetuneClient(env["server"].target, token=token, tls_ca=env["ca"].pem, server_name="localhost")
    assert carol.predict(env["export"].id, [env["image"]], top_k=1)
    with pytest.raises(grpc.RpcError) as e:
        carol.list_jobs()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    carol.close()


def big_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height``: tiny on the wire, huge once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" + b"\0" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_predict_refuses_an_image_over_the_pixel_budget_before_decoding_it(secured):
    env = secured
    bomb = big_png(13000, 13000)
    assert len(bomb) < 300_000
    dev = client_for(env, "dev")
    with pytest.raises(grpc.RpcError) as e:
        dev.predict(env["export"].id, [env["image"], bomb])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "images[1]" in e.value.details()
    assert "13000x13000" in e.value.details()
    assert dev.predict(env["export"].id, [env["image"]], top_k=1)  # still serving
    dev.close()


def test_binding_beyond_loopback_needs_auth_and_tls_or_an_explicit_insecure_flag(tmp_path):
    refused = subprocess.run([sys.executable, "-m", "edgetune.cli", "serve", "--host", "0.0.0.0", "--port", "0",
                              "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--auth-tokens and --tls-cert and --tls-key" in refused.stderr
    assert "--insecure" in refused.stderr and not (tmp_path / "d").exists()
    server = ServerProcess(tmp_path / "data", "--host", "0.0.0.0", "--insecure").start()
    try:
        c = server.client()
        assert c.list_base_models()
        c.close()
    finally:
        server.stop()
    assert "INSECURE: serving on 0.0.0.0 without --auth-tokens and --tls-cert and --tls-key" in server.log.read_text()


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(tmp_path):
    ca = CA(tmp_path / "pki")
    cert = ca.issue("server", "localhost", server=True)
    mine = ca.issue("client", "device-7", server=False)
    stranger = CA(tmp_path / "other", "stranger CA").issue("client2", "device-8", server=False)
    server = ServerProcess(tmp_path / "data", "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
                           "--tls-client-ca", str(ca.pem)).start()
    try:
        ok = server.client(tls_ca=ca.pem, tls_cert=mine.cert, tls_key=mine.key, server_name="localhost")
        assert ok.list_base_models()
        ok.close()
        for files in ({}, {"tls_cert": stranger.cert, "tls_key": stranger.key}):
            bad = EdgetuneClient(server.target, tls_ca=ca.pem, server_name="localhost", **files)
            with pytest.raises(grpc.RpcError) as e:
                bad.list_base_models()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            bad.close()
        # The remote CLI takes the same files.
        out = subprocess.run([sys.executable, "-m", "edgetune.cli", "remote", "models", "--server", server.target,
                              "--tls-ca", str(ca.pem), "--tls-cert", str(mine.cert), "--tls-key", str(mine.key),
                              "--server-name", "localhost"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "resnet18" in out.stdout, out.stderr
    finally:
        server.stop()


def test_per_principal_quotas_count_uploads_in_progress_and_queued_jobs(tmp_path):
    tokens = {name: add_token(tmp_path / "tokens.yaml", name, scopes)
              for name, scopes in (("alice", "jobs"), ("bob", "jobs"), ("root", "admin"))}
    server = ServerProcess(tmp_path / "data", "--auth-tokens", str(tmp_path / "tokens.yaml"), "--storage-quota-mb",
                           "1", "--max-queued-per-principal", "1", "--max-queued", "8").start()
    try:
        alice, bob, root = (server.client(token=tokens[n]) for n in ("alice", "bob", "root"))
        rows = "\n".join(f'{{"text": "row {i}", "label": "{"ab"[i % 2]}"}}' for i in range(15000)).encode()
        assert 2**19 < len(rows) < 2**20  # one fits the 1 MiB quota, two do not
        header = datasets_pb2.UploadHeader(name="t", format=datasets_pb2.DATASET_FORMAT_JSONL, total_size=len(rows),
                                           sha256=hashlib.sha256(rows).hexdigest())
        release = threading.Event()

        def slow():  # holds its reservation until released
            yield datasets_pb2.UploadDatasetRequest(header=header)
            yield datasets_pb2.UploadDatasetRequest(chunk=rows[:1000])
            release.wait(30)
            yield datasets_pb2.UploadDatasetRequest(chunk=rows[1000:])

        box = {}
        holder = threading.Thread(target=lambda: box.update(ds=alice.datasets.UploadDataset(slow(), timeout=60)))
        holder.start()
        time.sleep(1.0)
        for _ in range(2):  # the first upload is in progress: a second does not fit beside it
            with pytest.raises(grpc.RpcError) as e:
                alice.upload_bytes(header, rows)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "storage quota" in e.value.details()
        assert bob.upload_bytes(header, rows).owner == "bob"  # quotas are per principal
        release.set()
        holder.join(60)
        ds = box["ds"]
        with pytest.raises(grpc.RpcError) as e:
            alice.upload_bytes(header, rows)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert root.upload_bytes(header, rows).owner == "root"  # admins have no quota

        slow_job = dict(task="text_classification", base_model="bert", weights="random", epochs=50)
        alice.create_job(ds.id, **slow_job)
        with pytest.raises(grpc.RpcError) as e:
            for _ in range(3):
                alice.create_job(ds.id, **slow_job)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "per-principal" in e.value.details()
        for job in root.list_jobs():
            root.cancel_job(job.id)
    finally:
        server.stop()


def test_predict_returns_indices_and_asked_for_logits_and_refuses_a_top_k_past_the_classes(secured):
    env = secured
    dev = client_for(env, "dev")
    labels = list(env["export"].labels)
    [plain] = dev.predict(env["export"].id, [env["image"]])
    assert len(plain.top) == len(labels) == 3 and not plain.logits  # 0: 5, or every class when fewer
    assert [labels[t.index] for t in plain.top] == [t.label for t in plain.top]
    [full] = dev.predict(env["export"].id, [env["image"]], top_k=2, include_logits=True)
    assert len(full.top) == 2 and len(full.logits) == 3
    assert full.top[0].index == max(range(3), key=lambda i: full.logits[i])
    with pytest.raises(grpc.RpcError) as e:
        dev.predict(env["export"].id, [env["image"]], top_k=4)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("top_k:")
    dev.close()
