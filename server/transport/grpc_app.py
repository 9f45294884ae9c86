"""The gRPC transport: thin servicers, the guard interceptor (``guard.py``), health, reflection, TLS.

Each servicer method converts the request, calls ``EdgetuneService`` as the caller
(``context.principal``), converts the result back.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgetune.errors import DeadlineExceeded, InvalidArgument
from edgetune.oip import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from edgetune.v1 import (datasets_pb2, datasets_pb2_grpc, exports_pb2, exports_pb2_grpc, inference_pb2,
                         inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2, models_pb2_grpc)

from edgetune.server.auth import TokenFile
from edgetune.server.metrics import Metrics
from edgetune.server.service import EdgetuneService, ServerConfig
from edgetune.server.service.paging import Page
from edgetune.server.transport import convert
from edgetune.server.transport.guard import Guard, Redactor, Slots, status_of
from edgetune.server.transport.oip import OipServicer
from edgetune.server.transport.tls import TlsFiles

log = logging.getLogger("edgetune.server")
MAX_MESSAGE = 8 * 1024 * 1024
# A List reply stops adding items at this size (most clients' default receive limit is 4 MiB);
# its next_page_token continues after the last item it carries.
REPLY_BUDGET = 3 * 1024 * 1024
SERVICES = [datasets_pb2.DESCRIPTOR.services_by_name["Datasets"], jobs_pb2.DESCRIPTOR.services_by_name["Jobs"],
            models_pb2.DESCRIPTOR.services_by_name["Models"], exports_pb2.DESCRIPTOR.services_by_name["Exports"],
            inference_pb2.DESCRIPTOR.services_by_name["Inference"],
            grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]]
RESERVED_WORKERS = 8  # threads kept for health checks and for refusing calls beyond the limit


def paged(page: Page, to_message: Callable) -> tuple[list, str]:
    """A page's rows as messages up to ``REPLY_BUDGET`` bytes, and the token that continues it."""
    out, size = [], 0
    for i, row in enumerate(page.rows):
        msg = to_message(row)
        size += msg.ByteSize() + 8
        if out and size > REPLY_BUDGET:
            return out, page.token_after(page.rows[i - 1])
        out.append(msg)
    return out, page.next_token


def idle_bounded(messages: Iterator, idle_s: float) -> Iterator:
    """``messages`` of a client stream, raising DeadlineExceeded when none comes for ``idle_s``
    (a client that opens an upload and goes silent must not hold a server thread forever). A
    helper thread reads the stream; it stops when this generator is closed or the RPC ends."""
    box: queue.Queue = queue.Queue(maxsize=2)
    end, stop = object(), threading.Event()

    def hand(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pump():
        try:
            for m in messages:
                if not hand(m):
                    return
            hand(end)
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread
            hand(e)

    threading.Thread(target=pump, name="upload-reader", daemon=True).start()
    try:
        while True:
            try:
                m = box.get(timeout=idle_s)
            except queue.Empty:
                raise DeadlineExceeded("chunk", f"no upload message for {idle_s:g} s; the upload was "
                                                "dropped") from None
            if m is end:
                return
            if isinstance(m, BaseException):
                raise m
            yield m
    finally:
        stop.set()


class DatasetsServicer(datasets_pb2_grpc.DatasetsServicer):
    def __init__(self, service: EdgetuneService, metrics: Metrics):
        self.s, self.metrics = service, metrics

    def UploadDataset(self, request_iterator, context):
        with closing(idle_bounded(request_iterator, self.s.config.upload_idle_s)) as messages:
            return self._upload(messages, context)

    def _upload(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("header", "the first message must carry the upload header")
        h = first.header
        fmt = convert.FORMATS.get(h.format)
        if fmt is None:
            raise InvalidArgument("header.format", "must be DATASET_FORMAT_ZIP or DATASET_FORMAT_TAR_GZ")
        upload = self.s.datasets.begin_upload(context.principal, h.name, fmt, h.total_size, h.sha256,
                                              dict(h.columns))
        try:
            for msg in request_iterator:
                if msg.HasField("header"):
                    raise InvalidArgument("header", "only the first message may carry a header")
                upload.write(msg.chunk)
            return convert.dataset(upload.finish())
        except BaseException:
            upload.abort()
            raise
        finally:
            self.metrics.upload_bytes.inc(upload.received)

    def GetDataset(self, request, context):
        return convert.dataset(self.s.datasets.get(request.dataset_id, context.principal))

    def ListDatasets(self, request, context):
        items, token = paged(self.s.datasets.list(context.principal, request.page_size, request.page_token),
                             convert.dataset)
        return datasets_pb2.ListDatasetsResponse(datasets=items, next_page_token=token)

    def DeleteDataset(self, request, context):
        self.s.datasets.delete(request.dataset_id, context.principal)
        return datasets_pb2.DeleteDatasetResponse()


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    def __init__(self, service: EdgetuneService):
        self.s = service

    def CreateJob(self, request, context):
        return convert.job(self.s.jobs.create(convert.job_request(request), context.principal,
                                              request.idempotency_key))

    def GetJob(self, request, context):
        return convert.job(self.s.jobs.get(request.job_id, context.principal))

    def ListJobs(self, request, context):
        items, token = paged(self.s.jobs.list(context.principal, convert.state_filter(request.state),
                                              request.page_size, request.page_token), convert.job)
        return jobs_pb2.ListJobsResponse(jobs=items, next_page_token=token)

    def CancelJob(self, request, context):
        return convert.job(self.s.jobs.cancel(request.job_id, context.principal))

    def WatchJob(self, request, context):
        for e in self.s.jobs.watch(request.job_id, context.principal, request.after_event_id, context.is_active):
            yield convert.event(e)


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, service: EdgetuneService):
        self.s = service

    def ListBaseModels(self, request, context):
        return models_pb2.ListBaseModelsResponse(models=[convert.base_model(r) for r in self.s.list_base_models()])


class ExportsServicer(exports_pb2_grpc.ExportsServicer):
    def __init__(self, service: EdgetuneService):
        self.s = service

    def ExportModel(self, request, context):
        return convert.export(self.s.exports.create(context.principal, **convert.export_request(request)))

    def BatchExportModels(self, request, context):
        """Each result's export without its labels (GetExport has them): 64 label lists could
        outgrow a reply."""
        results = self.s.exports.create_many(context.principal, [convert.export_request(r) for r in request.requests])
        return exports_pb2.BatchExportModelsResponse(results=[
            exports_pb2.BatchExportResult(export=convert.export(row, labels=False)) if row is not None else
            exports_pb2.BatchExportResult(code=status_of(e).value[0], message=f"{e.subject}: {e.message}")
            for row, e in results])

    def WatchExport(self, request, context):
        for e in self.s.exports.watch(request.export_id, context.principal, request.after_event_id,
                                      context.is_active):
            yield convert.event(e)

    def GetExport(self, request, context):
        return convert.export(self.s.exports.get(request.export_id, context.principal))

    def ListExports(self, request, context):
        items, token = paged(self.s.exports.list(context.principal, request.job_id, request.page_size,
                                                 request.page_token), convert.export)
        return exports_pb2.ListExportsResponse(exports=items, next_page_token=token)

    def DownloadArtifact(self, request, context):
        for data, offset, digest in self.s.exports.artifact_chunks(request.export_id, context.principal):
            yield exports_pb2.ArtifactChunk(data=data, offset=offset, sha256=digest)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, service: EdgetuneService, metrics: Metrics):
        self.s, self.metrics = service, metrics

    def Predict(self, request, context):
        start = time.perf_counter()
        results = self.s.inference.predict(request.export_id, list(request.images), request.top_k, list(request.texts),
                                           request.variant or None)
        self.metrics.inference.labels(request.export_id, "Predict").observe(time.perf_counter() - start)
        return inference_pb2.PredictResponse(results=[
            inference_pb2.Classification(top=[inference_pb2.LabelScore(label=lab, score=s, index=i)
                                              for (lab, s), i in zip(p.top, p.indices)],
                                         logits=p.logits if request.include_logits else [])
            for p in results])

    def Generate(self, request, context):
        pieces = self.s.inference.generate(request.export_id, request.prompt, request.max_new_tokens)
        for index, (token, text) in enumerate(pieces):
            yield inference_pb2.GenerateResponse(index=index, token_id=token, text=text)


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.Server, names: list[str]) -> None:
    """Server reflection as v1alpha (grpcio-reflection) and as v1, whose messages are the same
    on the wire: today's grpcurl and Postman ask for v1, older tools for v1alpha."""
    from grpc_reflection.v1alpha import reflection as refl, reflection_pb2

    every = [*names, refl.SERVICE_NAME, REFLECTION_V1]
    refl.enable_server_reflection(every, server)
    v1 = refl.ReflectionServicer(every)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            v1.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)})])


@dataclass(frozen=True)
class Security:
    """Who may call and how: a token file (auth on), TLS files, and consent to serve beyond
    loopback without them."""

    tokens: Path | None = None
    tls: TlsFiles | None = None
    insecure: bool = False

    def check_bind(self, host: str) -> None:
        """Refuse a bind beyond loopback without auth and TLS, unless ``insecure`` (then log loudly)."""
        if is_loopback(host):
            return
        missing = [what for what, ok in (("--auth-tokens", self.tokens), ("--tls-cert and --tls-key", self.tls))
                   if not ok]
        if not missing:
            return
        if not self.insecure:
            raise InvalidArgument("--host", f"serving on {host} (beyond loopback) needs {' and '.join(missing)}; "
                                            "--insecure serves without them")
        log.warning("INSECURE: serving on %s without %s: anyone who reaches this port can %s", host,
                    " and ".join(missing), "read and change every job" if not self.tokens else "read the traffic")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RunningServer:
    """A started server: the grpc server, the service and its health servicer."""

    def __init__(self, service: EdgetuneService, host: str, port: int, reflection: bool, max_workers: int = 64,
                 security: Security = Security()):
        security.check_bind(host)
        self.service = service
        self.metrics = Metrics(service.store, service.runner)
        self.health = health.HealthServicer()
        tokens = TokenFile(security.tokens) if security.tokens else None
        limit = max_workers - RESERVED_WORKERS
        # Health checks take no slot: with every slot held (say by silent uploads) they still answer.
        guard = Guard(tokens, Slots(limit, limit if tokens is None else max(1, limit // 2)),
                      Redactor.for_server(service.data_dir, service.config.cache_root()), self.metrics)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=[guard],
                                  # A hard stop far above the guard's slots: calls refused by the guard
                                  # pass through here first, and must not queue without end.
                                  maximum_concurrent_rpcs=max_workers * 4,
                                  options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                           ("grpc.max_send_message_length", MAX_MESSAGE)])
        datasets_pb2_grpc.add_DatasetsServicer_to_server(DatasetsServicer(service, self.metrics), self.server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(service), self.server)
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(service), self.server)
        exports_pb2_grpc.add_ExportsServicer_to_server(ExportsServicer(service), self.server)
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(service, self.metrics), self.server)
        self.oip = OipServicer(service, self.metrics)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.oip, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in SERVICES]
        if reflection:
            enable_reflection(self.server, [*names, health.SERVICE_NAME])
        self._names = names
        address = f"{host}:{port}"
        self.port = (self.server.add_secure_port(address, security.tls.credentials()) if security.tls
                     else self.server.add_insecure_port(address))
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set_health(self, status) -> None:
        for name in ["", *self._names]:
            self.health.set(name, status)

    def start(self) -> None:
        self.service.start()  # recovery runs before any RPC is served
        self.server.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.oip.serving = True

    def stop(self, grace_s: float) -> None:
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.oip.serving = False
        done = self.server.stop(grace_s)  # returns at once; in-flight RPCs get grace_s
        self.service.stop(grace_s, rpcs_drained=lambda: done.wait(grace_s + 1))


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 50051, reflection: bool = False,
          grace_s: float = 10.0, on_ready=print, security: Security = Security(),
          metrics_address: tuple[str, int] | None = None) -> None:
    """Run until SIGTERM/SIGINT: then NOT_SERVING, a grace period for in-flight RPCs, and running
    jobs stopped at their last checkpoint to resume after restart. ``metrics_address``: serve
    Prometheus metrics on (host, port) too."""
    security.check_bind(host)  # before the store is opened
    running = RunningServer(EdgetuneService(config), host, port, reflection, security=security)
    if metrics_address:  # before start: a port in use stops us before any job is resumed
        metrics_port = running.metrics.serve(*metrics_address)
        on_ready(f"metrics on http://{metrics_address[0]}:{metrics_port}/metrics")
    running.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    on_ready(f"edgetune serving on {host}:{running.port} (data dir {config.data_dir}, {config.slots} job slot(s), "
             f"GPUs: {','.join(config.gpus) or 'none'}, auth: {'tokens' if security.tokens else 'off'}, "
             f"TLS: {('mutual' if security.tls.client_ca else 'on') if security.tls else 'off'})")
    stop.wait()
    log.info("stopping: NOT_SERVING, %.0fs grace for in-flight RPCs, running jobs re-queued", grace_s)
    running.stop(grace_s)
    log.info("stopped")
