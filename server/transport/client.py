"""A Python client for the edgetune gRPC API; the CLI's remote commands are built on it."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetune.v1 import (datasets_pb2, datasets_pb2_grpc, exports_pb2, exports_pb2_grpc, inference_pb2,
                         inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2, models_pb2_grpc)

from edgetune.server.transport import convert
from edgetune.tasks import IMAGE_CLASSIFICATION

UPLOAD_CHUNK = 1 << 20
TERMINAL = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)
METHODS = {name: value for value, name in convert.METHODS.items()}
TASKS = {name: value for value, name in convert.TASKS.items()}
TEXT_FORMATS = {".jsonl": datasets_pb2.DATASET_FORMAT_JSONL, ".csv": datasets_pb2.DATASET_FORMAT_CSV,
                ".tsv": datasets_pb2.DATASET_FORMAT_TSV}


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (TLS or not: loopback servers may use
    tokens without TLS, where grpc's call credentials refuse to run)."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        return details._replace(metadata=[*(details.metadata or ()), self.header])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _WithToken:
    """A stub whose calls carry the bearer token as call metadata: what ``_Bearer`` does, without
    an interceptor's per-call Python work (measured: most of what auth added to Predict)."""

    def __init__(self, stub, header: tuple[str, str]):
        self._stub, self._header = stub, header

    def __getattr__(self, name):
        return _TokenCall(getattr(self._stub, name), self._header)


class _TokenCall:
    def __init__(self, multicallable, header: tuple[str, str]):
        self._call, self._header = multicallable, header

    def _kw(self, kw: dict) -> dict:
        return {**kw, "metadata": [*(kw.get("metadata") or ()), self._header]}

    def __call__(self, request, **kw):
        return self._call(request, **self._kw(kw))

    def with_call(self, request, **kw):
        return self._call.with_call(request, **self._kw(kw))

    def future(self, request, **kw):
        return self._call.future(request, **self._kw(kw))


def open_channel(target: str, token: str | None = None, tls_ca: str | Path | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 server_name: str | None = None) -> grpc.Channel:
    """A channel to an edgetune server: TLS when ``tls_ca`` (the CA that signed the server's
    certificate; without it, the system's CAs) or a client certificate (``tls_cert`` and
    ``tls_key``, for mutual TLS) is given, plaintext otherwise; ``token`` rides on every call.
    ``server_name`` overrides the name the server's certificate is checked against (default: the
    target's host)."""
    options = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("a client certificate needs both tls_cert and tls_key")
    if tls_ca or tls_cert:
        creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes() if tls_ca else None,
                                             Path(tls_key).read_bytes() if tls_key else None,
                                             Path(tls_cert).read_bytes() if tls_cert else None)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel


class EdgetuneClient:
    """Thin wrapper over the generated stubs. Methods raise ``grpc.RpcError`` on failure.

    ``token`` and the TLS files are ``open_channel``'s; pass ``channel`` to bring your own."""

    def __init__(self, target: str = "127.0.0.1:50051", channel: grpc.Channel | None = None,
                 token: str | None = None, tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, server_name: str | None = None):
        # The stubs' calls add the token themselves; ``channel`` (for stubs of your own) adds it
        # through an interceptor.
        raw = channel or open_channel(target, None, tls_ca, tls_cert, tls_key, server_name)
        self.channel = grpc.intercept_channel(raw, _Bearer(token)) if token else raw

        def stub(cls):
            return _WithToken(cls(raw), ("authorization", f"Bearer {token}")) if token else cls(raw)
        self.datasets = stub(datasets_pb2_grpc.DatasetsStub)
        self.jobs = stub(jobs_pb2_grpc.JobsStub)
        self.models = stub(models_pb2_grpc.ModelsStub)
        self.exports = stub(exports_pb2_grpc.ExportsStub)
        self.inference = stub(inference_pb2_grpc.InferenceStub)
        self.health = stub(health_pb2_grpc.HealthStub)

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until health says SERVING (the store is open and recovery has run)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server not SERVING")
            time.sleep(0.2)

    def upload_dataset(self, path: str | Path, name: str | None = None, timeout: float = 600,
                       columns: dict[str, str] | None = None) -> datasets_pb2.Dataset:
        """Upload an ImageFolder directory (zipped on the fly), a .zip / .tar.gz of one, or a
        .jsonl / .csv / .tsv file of text rows (``columns`` maps "text", "label", "prompt" or
        "response" to the file's own column names)."""
        path = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            if path.suffix.lower() in TEXT_FORMATS:
                archive, fmt = path, TEXT_FORMATS[path.suffix.lower()]
            else:
                archive = Path(shutil.make_archive(str(Path(tmp) / "dataset"), "zip", root_dir=path)) \
                    if path.is_dir() else path
                fmt = datasets_pb2.DATASET_FORMAT_ZIP if archive.suffix == ".zip" else datasets_pb2.DATASET_FORMAT_TAR_GZ
            data = archive.read_bytes()
        header = datasets_pb2.UploadHeader(name=name or path.name, format=fmt, total_size=len(data),
                                           sha256=hashlib.sha256(data).hexdigest(), columns=columns or {})
        return self.upload_bytes(header, data, timeout)

    def upload_bytes(self, header: datasets_pb2.UploadHeader, data: bytes, timeout: float = 600):
        def messages():
            yield datasets_pb2.UploadDatasetRequest(header=header)
            for i in range(0, len(data), UPLOAD_CHUNK):
                yield datasets_pb2.UploadDatasetRequest(chunk=data[i:i + UPLOAD_CHUNK])

        return self.datasets.UploadDataset(messages(), timeout=timeout)

    def create_job(self, dataset_id: str, base_model: str = "", method: str = "full", weights: str = "catalog",
                   idempotency_key: str = "", timeout: float = 10, task: str = IMAGE_CLASSIFICATION,
                   gpus: int = 0, **hyper) -> jobs_pb2.Job:
        req = jobs_pb2.CreateJobRequest(task=TASKS.get(task, jobs_pb2.TASK_UNSPECIFIED), base_model=base_model,
                                        weights=weights, method=METHODS.get(method, jobs_pb2.METHOD_UNSPECIFIED),
                                        hyperparameters=jobs_pb2.Hyperparameters(**hyper), dataset_id=dataset_id,
                                        idempotency_key=idempotency_key, gpus=gpus)
        return self.jobs.CreateJob(req, timeout=timeout)

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        return self.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=5)

    def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        return self.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=10)

    def list_jobs(self, state: int = jobs_pb2.JOB_STATE_UNSPECIFIED) -> list[jobs_pb2.Job]:
        jobs, token = [], ""
        while True:
            resp = self.jobs.ListJobs(jobs_pb2.ListJobsRequest(state=state, page_token=token), timeout=5)
            jobs += resp.jobs
            token = resp.next_page_token
            if not token:
                return jobs

    def watch(self, job_id: str, after_event_id: int = 0, reconnect_s: float = 1.0,
              max_reconnect_s: float = 120.0) -> Iterator[jobs_pb2.JobEvent]:
        """Events until the job finishes, reconnecting (from the last event id) if the stream drops."""
        return self._follow(lambda last: self.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id,
                                                                                      after_event_id=last)),
                            after_event_id, reconnect_s, max_reconnect_s)

    def watch_export(self, export_id: str, after_event_id: int = 0, reconnect_s: float = 1.0,
                     max_reconnect_s: float = 120.0, timeout: float | None = None) -> Iterator[jobs_pb2.JobEvent]:
        """An export's events until it finishes, reconnecting like ``watch``; the stream's deadline is
        ``timeout`` seconds from now (DEADLINE_EXCEEDED once it passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._follow(lambda last: self.exports.WatchExport(
            exports_pb2.WatchExportRequest(export_id=export_id, after_event_id=last),
            timeout=None if deadline is None else max(0.1, deadline - time.monotonic())),
            after_event_id, reconnect_s, max_reconnect_s)

    @staticmethod
    def _follow(open_stream, after_event_id: int, reconnect_s: float, max_reconnect_s: float
                ) -> Iterator[jobs_pb2.JobEvent]:
        last, down_since = after_event_id, None
        while True:
            try:
                for event in open_stream(last):
                    down_since = None
                    last = event.id
                    yield event
                return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > max_reconnect_s:
                    raise
                time.sleep(reconnect_s)

    def export(self, job_id: str, atol: float = 0.0, rtol: float = 0.0, allow_degenerate: bool = False,
               timeout: float = 600, precisions: list[str] = (), wait: bool = True,
               on_event=None) -> exports_pb2.Export:
        """Queue an export; with ``wait``, follow it (``on_event`` sees each event) and return it
        finished: SUCCEEDED (valid) or FAILED (error says why)."""
        req = exports_pb2.ExportModelRequest(job_id=job_id, atol=atol, rtol=rtol, allow_degenerate=allow_degenerate,
                                             precisions=list(precisions))
        exp = self.exports.ExportModel(req, timeout=30)
        return self.wait_export(exp.id, timeout, on_event) if wait else exp

    def wait_export(self, export_id: str, timeout: float = 600, on_event=None) -> exports_pb2.Export:
        """Follow an export until it finishes (TimeoutError after ``timeout`` seconds, queued or not)."""
        try:
            for event in self.watch_export(export_id, timeout=timeout):
                if on_event:
                    on_event(event)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            raise TimeoutError(f"export {export_id} not finished after {timeout:.0f}s") from None
        return self.exports.GetExport(exports_pb2.GetExportRequest(export_id=export_id), timeout=5)

    def export_many(self, requests: list[dict], timeout: float = 30) -> exports_pb2.BatchExportModelsResponse:
        """Queue several exports in one call; each dict holds ExportModelRequest's fields."""
        req = exports_pb2.BatchExportModelsRequest(requests=[exports_pb2.ExportModelRequest(**r) for r in requests])
        return self.exports.BatchExportModels(req, timeout=timeout)

    def download(self, export_id: str, out_dir: str | Path, timeout: float = 300) -> Path:
        """Download a valid bundle, verify its sha256 and unpack it into ``out_dir``."""
        buf, digest = io.BytesIO(), ""
        for chunk in self.exports.DownloadArtifact(exports_pb2.DownloadArtifactRequest(export_id=export_id),
                                                   timeout=timeout):
            if chunk.offset != buf.tell():
                raise IOError(f"chunk at offset {chunk.offset}, expected {buf.tell()}")
            buf.write(chunk.data)
            digest = chunk.sha256 or digest
        data = buf.getvalue()
        if hashlib.sha256(data).hexdigest() != digest:
            raise IOError("downloaded artifact does not match its sha256")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            tf.extractall(out, filter="data")
        return out / export_id

    def predict(self, export_id: str, images: list[bytes] = (), top_k: int = 0, timeout: float = 30,
                texts: list[str] = (), variant: str = "", include_logits: bool = False):
        """Per image (image exports) or text (text classification exports): the top-k classes
        (label, score, index; ``top_k`` 0: 5, or all when fewer) and, asked for, the logits."""
        req = inference_pb2.PredictRequest(export_id=export_id, images=list(images), texts=list(texts), top_k=top_k,
                                           variant=variant, include_logits=include_logits)
        return self.inference.Predict(req, timeout=timeout).results

    def generate(self, export_id: str, prompt: str, max_new_tokens: int = 0, timeout: float = 120
                 ) -> Iterator[inference_pb2.GenerateResponse]:
        """Stream a greedy completion, one message per new token."""
        req = inference_pb2.GenerateRequest(export_id=export_id, prompt=prompt, max_new_tokens=max_new_tokens)
        return self.inference.Generate(req, timeout=timeout)

    def list_base_models(self):
        return self.models.ListBaseModels(models_pb2.ListBaseModelsRequest(), timeout=5).models
