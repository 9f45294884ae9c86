"""The whole path over a real socket: upload -> job -> watch -> export -> download -> predict."""

import hashlib
import json

import grpc
import pytest

from edgetune.export.onnx_export import read_metadata
from edgetune.v1 import datasets_pb2, exports_pb2, jobs_pb2
from tests.conftest import write_pattern_folder
from tests.server.conftest import zip_of

TINY = dict(base_model="resnet18", weights="random", epochs=2, image_size=32, batch_size=8)


def test_full_flow(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"), name="patterns")
    assert ds.id.startswith("ds-") and [c.label for c in ds.report.classes] == ["a", "b", "c"]
    assert sum(c.train + c.val for c in ds.report.classes) == 36

    job = client.create_job(ds.id, **TINY)
    assert job.state == jobs_pb2.JOB_STATE_QUEUED and job.epochs == 2
    events = list(client.watch(job.id))
    kinds = [e.WhichOneof("kind") for e in events]
    states = [jobs_pb2.JobState.Name(e.state) for e in events if e.WhichOneof("kind") == "state"]
    assert states == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert [e.epoch.epoch for e in events if e.WhichOneof("kind") == "epoch"] == [1, 2]
    assert "log" in kinds and [e.id for e in events] == sorted(e.id for e in events)

    done = client.get_job(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED and done.epoch == 2 and done.best.epoch >= 1

    # A reconnecting watcher passes the last id it saw and gets exactly the rest.
    cut = events[2].id
    assert [e.id for e in client.watch(job.id, after_event_id=cut)] == [e.id for e in events if e.id > cut]

    exp = client.export(job.id)
    assert exp.valid and exp.parity.passed and exp.parity.margin <= 1 and exp.parity.precision == "fp32"
    assert exp.parity.top1_agreement == 1.0 and exp.parity.top1_compared > 0 and list(exp.labels) == ["a", "b", "c"]
    assert all(c.passed and c.reference == "pytorch" and c.candidate == "onnxruntime" for c in exp.parity.cases)
    assert not done.warnings

    bundle = client.download(exp.id, tmp_path / "dl")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["valid"] and hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest() == exp.model_sha256

    # Manifests and model metadata name the job, never a path on the server.
    assert str(tmp_path) not in (bundle / "manifest.json").read_text() and manifest["source_run"]["name"] == job.id
    assert all(str(tmp_path) not in v for v in read_metadata(bundle / "model.onnx").values())
    assert [v.precision for v in exp.variants] == ["fp32"] and exp.default_variant == "fp32"

    images = [p.read_bytes() for p in sorted((tmp_path / "pat" / "b").glob("*.png"))[:4]]
    results = client.predict(exp.id, images, top_k=2)
    assert len(results) == 4 and all(len(r.top) == 2 for r in results)
    assert all(r.top[0].score >= r.top[1].score for r in results)

    # Variants: fp16 passes its held-out gate; INT8 needs 100 calibration images (this job has ~29).
    half = client.export(job.id, precisions=["fp16"])
    assert half.valid and [v.precision for v in half.variants] == ["fp32", "fp16"] and half.latency_cpu
    fp16 = half.variants[1]
    assert fp16.file == "model.fp16.onnx" and fp16.accuracy == fp16.fp32_accuracy and fp16.latency_ms_batch1 > 0
    assert [r.top[0].label for r in client.predict(half.id, images, variant="fp16")] == \
        [r.top[0].label for r in results]
    for call, code, field in ((lambda: client.export(job.id, precisions=["int8"]), "FAILED_PRECONDITION",
                               "precision: INT8 calibration needs at least 100 training images"),
                              (lambda: client.export(job.id, precisions=["int4"]), "INVALID_ARGUMENT",
                               "precision: unknown precision 'int4'"),
                              (lambda: client.predict(exp.id, images, variant="int8"), "INVALID_ARGUMENT",
                               "variant: the bundle has fp32, not 'int8'")):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code().name == code and field in err.value.details()

    assert [j.id for j in client.list_jobs(jobs_pb2.JOB_STATE_SUCCEEDED)] == [job.id]
    assert client.list_jobs(jobs_pb2.JOB_STATE_RUNNING) == []


def test_idempotency_key(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    a = client.create_job(ds.id, idempotency_key="k1", **TINY)
    b = client.create_job(ds.id, idempotency_key="k1", **TINY)
    assert a.id == b.id
    with pytest.raises(grpc.RpcError) as e:
        client.create_job(ds.id, idempotency_key="k1", **{**TINY, "epochs": 3})
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and "idempotency_key" in e.value.details()
    client.cancel_job(a.id)




def _header(data: bytes, **over):
    h = dict(name="x", format=datasets_pb2.DATASET_FORMAT_ZIP, total_size=len(data),
             sha256=hashlib.sha256(data).hexdigest())
    h.update(over)
    return datasets_pb2.UploadHeader(**h)


def test_bad_requests_get_their_documented_codes(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    png = (tmp_path / "pat" / "a" / "a_0.png").read_bytes()
    ok_zip = zip_of({"a/1.png": png, "b/1.png": png})
    code = grpc.StatusCode
    cases = [
        ("unknown arch", lambda: client.create_job(ds.id, **{**TINY, "base_model": "resnet9000"}),
         code.INVALID_ARGUMENT, "base_model"),
        ("negative lr", lambda: client.create_job(ds.id, **{**TINY, "learning_rate": -1.0}),
         code.INVALID_ARGUMENT, "hyperparameters.learning_rate"),
        ("negative epochs", lambda: client.create_job(ds.id, **{**TINY, "epochs": -1}),
         code.INVALID_ARGUMENT, "hyperparameters.epochs"),
        ("no method", lambda: client.create_job(ds.id, method="nope", **{k: v for k, v in TINY.items()}),
         code.INVALID_ARGUMENT, "method"),
        ("weights path", lambda: client.create_job(ds.id, **{**TINY, "weights": "/etc/passwd"}),
         code.INVALID_ARGUMENT, "weights"),
        ("no catalog weights", lambda: client.create_job(ds.id, **{**TINY, "weights": "catalog"}),
         code.INVALID_ARGUMENT, "weights"),
        ("unknown dataset", lambda: client.create_job("ds-000000000000", **TINY), code.NOT_FOUND, "dataset_id"),
        ("unknown job", lambda: client.get_job("job-nope"), code.NOT_FOUND, "job_id"),
        ("unknown export", lambda: client.predict("exp-nope", [png]), code.NOT_FOUND, "export_id"),
        ("bad page token", lambda: client.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token="x")),
         code.INVALID_ARGUMENT, "page_token"),
        ("sha mismatch", lambda: client.upload_bytes(_header(ok_zip, sha256="0" * 64), ok_zip),
         code.INVALID_ARGUMENT, "header.sha256"),
        ("size mismatch", lambda: client.upload_bytes(_header(ok_zip, total_size=len(ok_zip) + 5), ok_zip),
         code.INVALID_ARGUMENT, "header.total_size"),
        ("no format", lambda: client.upload_bytes(_header(ok_zip, format=0), ok_zip),
         code.INVALID_ARGUMENT, "header.format"),
        ("one class", lambda: client.upload_bytes(_header(zip_of({"a/1.png": png})), zip_of({"a/1.png": png})),
         code.INVALID_ARGUMENT, "at least 2 classes"),
        ("corrupt image", lambda: client.upload_bytes(
            _header(z := zip_of({"a/1.png": png, "b/1.png": png, "b/bad.png": b"garbage"})), z),
         code.INVALID_ARGUMENT, "bad.png"),
        ("oversized upload", lambda: client.upload_bytes(_header(ok_zip, total_size=10 * 1024**3), ok_zip),
         code.RESOURCE_EXHAUSTED, "quota"),
        ("archive escaping", lambda: client.upload_bytes(
            _header(z := zip_of({"a/1.png": png, "../evil.png": png})), z),
         code.INVALID_ARGUMENT, "unsafe entry"),
    ]
    for name, call, expected, words in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == expected, (name, e.value.code(), e.value.details())
        assert words in e.value.details(), (name, e.value.details())
    assert not (tmp_path / "evil.png").exists() and not (server.data_dir / "evil.png").exists()
    # Export of an unfinished job is a precondition failure; the server is still serving.
    job = client.create_job(ds.id, **{**TINY, "epochs": 50})
    with pytest.raises(grpc.RpcError) as e:
        client.export(job.id)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    client.cancel_job(job.id)
    assert len(client.list_base_models()) >= 8


def test_a_degenerate_job_warns_and_export_needs_consent(server, tmp_path):
    """Identical images in every class: the job succeeds, says its model is degenerate (in the job
    and its events), and ExportModel refuses it unless allow_degenerate is set."""
    from tests.conftest import write_identical_folder

    client = server.client()
    ds = client.upload_dataset(write_identical_folder(tmp_path / "same"), name="same")
    job = client.create_job(ds.id, **{**TINY, "epochs": 1})
    events = list(client.watch(job.id))
    done = client.get_job(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert any("outputs are constant" in w for w in done.warnings), done.warnings
    assert any("majority-class rate" in w for w in done.warnings)
    assert any(e.log.startswith("warning: degenerate model") for e in events if e.WhichOneof("kind") == "log")

    code = grpc.StatusCode
    for kwargs, expected, words in (({}, code.FAILED_PRECONDITION, "allow_degenerate"),
                                    ({"allow_degenerate": True, "rtol": 2.0}, code.INVALID_ARGUMENT, "rtol"),
                                    ({"allow_degenerate": True, "atol": float("inf")}, code.INVALID_ARGUMENT, "atol")):
        with pytest.raises(grpc.RpcError) as e:
            client.export(job.id, **kwargs)
        assert e.value.code() == expected and words in e.value.details(), (kwargs, e.value.details())
    listed = client.exports.ListExports(exports_pb2.ListExportsRequest(job_id=job.id), timeout=5)
    assert list(listed.exports) == []  # refused exports leave nothing behind

    exp = client.export(job.id, allow_degenerate=True)
    assert exp.valid and exp.parity.passed
    manifest = json.loads((client.download(exp.id, tmp_path / "dl") / "manifest.json").read_text())
    assert manifest["source_run"]["exported_despite"] == ["degenerate"]
    assert manifest["source_run"]["degenerate"] and manifest["source_run"]["finished"]
