"""The gRPC transport: thin servicers, one interceptor mapping domain errors, health, reflection.

Each servicer method converts the request, calls ``EdgetuneService``, converts the result back.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from edgetune.errors import (AlreadyExists, DataError, EdgetuneError, FailedPrecondition, InvalidArgument,
                             NotFound, ParityError, ResourceExhausted, WeightsError)
from edgetune.v1 import (datasets_pb2, datasets_pb2_grpc, exports_pb2, exports_pb2_grpc, inference_pb2,
                         inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2, models_pb2_grpc)

from edgetune.server.service import EdgetuneService, ServerConfig
from edgetune.server.transport import convert

log = logging.getLogger("edgetune.server")
MAX_MESSAGE = 8 * 1024 * 1024

STATUS = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT), (DataError, grpc.StatusCode.INVALID_ARGUMENT),
    (WeightsError, grpc.StatusCode.INVALID_ARGUMENT), (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS), (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ParityError, grpc.StatusCode.FAILED_PRECONDITION), (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
]
SERVICES = [datasets_pb2.DESCRIPTOR.services_by_name["Datasets"], jobs_pb2.DESCRIPTOR.services_by_name["Jobs"],
            models_pb2.DESCRIPTOR.services_by_name["Models"], exports_pb2.DESCRIPTOR.services_by_name["Exports"],
            inference_pb2.DESCRIPTOR.services_by_name["Inference"]]


def status_of(error: EdgetuneError) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


class DomainErrors(grpc.ServerInterceptor):
    """Domain errors become their status code with "field: message"; anything else is INTERNAL."""

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None

        def fail(ctx, e):
            if isinstance(e, EdgetuneError):
                ctx.abort(status_of(e), f"{e.subject}: {e.message}")
            log.exception("%s failed", details.method)
            ctx.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")

        def unary(fn):
            def call(req, ctx):
                try:
                    return fn(req, ctx)
                except Exception as e:  # noqa: BLE001 - mapped by fail()
                    fail(ctx, e)
            return call

        def streaming(fn):
            def call(req, ctx):
                try:
                    yield from fn(req, ctx)
                except Exception as e:  # noqa: BLE001
                    fail(ctx, e)
            return call

        kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)


class DatasetsServicer(datasets_pb2_grpc.DatasetsServicer):
    def __init__(self, service: EdgetuneService):
        self.s = service

    def UploadDataset(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("header", "the first message must carry the upload header")
        h = first.header
        fmt = convert.FORMATS.get(h.format)
        if fmt is None:
            raise InvalidArgument("header.format", "must be DATASET_FORMAT_ZIP or DATASET_FORMAT_TAR_GZ")
        upload = self.s.datasets.begin_upload(h.name, fmt, h.total_size, h.sha256, dict(h.columns))
        try:
            for msg in request_iterator:
                if msg.HasField("header"):
                    raise InvalidArgument("header", "only the first message may carry a header")
                upload.write(msg.chunk)
            return convert.dataset(upload.finish())
        except BaseException:
            upload.abort()
            raise

    def GetDataset(self, request, context):
        return convert.dataset(self.s.datasets.get(request.dataset_id))

    def ListDatasets(self, request, context):
        rows, token = self.s.datasets.list(request.page_size, request.page_token)
        return datasets_pb2.ListDatasetsResponse(datasets=[convert.dataset(r) for r in rows], next_page_token=token)

    def DeleteDataset(self, request, context):
        self.s.datasets.delete(request.dataset_id)
        return datasets_pb2.DeleteDatasetResponse()


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    def __init__(self, service: EdgetuneService):
        self.s = service

    def CreateJob(self, request, context):
        return convert.job(self.s.jobs.create(convert.job_request(request), request.idempotency_key))

    def GetJob(self, request, context):
        return convert.job(self.s.jobs.get(request.job_id))

    def ListJobs(self, request, context):
        rows, token = self.s.jobs.list(convert.state_filter(request.state), request.page_size, request.page_token)
        return jobs_pb2.ListJobsResponse(jobs=[convert.job(r) for r in rows], next_page_token=token)

    def CancelJob(self, request, context):
        return convert.job(self.s.jobs.cancel(request.job_id))

    def WatchJob(self, request, context):
        for e in self.s.jobs.watch(request.job_id, request.after_event_id, context.is_active):
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
        return convert.export(self.s.exports.create(**convert.export_request(request)))

    def BatchExportModels(self, request, context):
        results = self.s.exports.create_many([convert.export_request(r) for r in request.requests])
        return exports_pb2.BatchExportModelsResponse(results=[
            exports_pb2.BatchExportResult(export=convert.export(row)) if row is not None else
            exports_pb2.BatchExportResult(code=status_of(e).value[0], message=f"{e.subject}: {e.message}")
            for row, e in results])

    def WatchExport(self, request, context):
        for e in self.s.exports.watch(request.export_id, request.after_event_id, context.is_active):
            yield convert.event(e)

    def GetExport(self, request, context):
        return convert.export(self.s.exports.get(request.export_id))

    def ListExports(self, request, context):
        rows, token = self.s.exports.list(request.job_id, request.page_size, request.page_token)
        return exports_pb2.ListExportsResponse(exports=[convert.export(r) for r in rows], next_page_token=token)

    def DownloadArtifact(self, request, context):
        for data, offset, digest in self.s.exports.artifact_chunks(request.export_id):
            yield exports_pb2.ArtifactChunk(data=data, offset=offset, sha256=digest)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, service: EdgetuneService):
        self.s = service

    def Predict(self, request, context):
        results = self.s.inference.predict(request.export_id, list(request.images), request.top_k, list(request.texts),
                                           request.variant or None)
        return inference_pb2.PredictResponse(results=[
            inference_pb2.Classification(top=[inference_pb2.LabelScore(label=lab, score=s) for lab, s in r])
            for r in results])

    def Generate(self, request, context):
        pieces = self.s.inference.generate(request.export_id, request.prompt, request.max_new_tokens)
        for index, (token, text) in enumerate(pieces):
            yield inference_pb2.GenerateResponse(index=index, token_id=token, text=text)


class RunningServer:
    """A started server: the grpc server, the service and its health servicer."""

    def __init__(self, service: EdgetuneService, host: str, port: int, reflection: bool, max_workers: int = 64):
        self.service = service
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  interceptors=[DomainErrors()],
                                  # Beyond this, callers get RESOURCE_EXHAUSTED instead of starving
                                  # health checks (each WatchJob holds a thread while it streams).
                                  maximum_concurrent_rpcs=max_workers - 4,
                                  options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                           ("grpc.max_send_message_length", MAX_MESSAGE)])
        datasets_pb2_grpc.add_DatasetsServicer_to_server(DatasetsServicer(service), self.server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(service), self.server)
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(service), self.server)
        exports_pb2_grpc.add_ExportsServicer_to_server(ExportsServicer(service), self.server)
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(service), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in SERVICES]
        if reflection:
            from grpc_reflection.v1alpha import reflection as refl

            refl.enable_server_reflection([*names, health.SERVICE_NAME, refl.SERVICE_NAME], self.server)
        self._names = names
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set_health(self, status) -> None:
        for name in ["", *self._names]:
            self.health.set(name, status)

    def start(self) -> None:
        self.service.start()  # recovery runs before any RPC is served
        self.server.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_s: float) -> None:
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        done = self.server.stop(grace_s)  # returns at once; in-flight RPCs get grace_s
        self.service.stop(grace_s, rpcs_drained=lambda: done.wait(grace_s + 1))


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 50051, reflection: bool = False,
          grace_s: float = 10.0, on_ready=print) -> None:
    """Run until SIGTERM/SIGINT: then NOT_SERVING, a grace period for in-flight RPCs, and running
    jobs stopped at their last checkpoint to resume after restart."""
    running = RunningServer(EdgetuneService(config), host, port, reflection)
    running.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    on_ready(f"edgetune serving on {host}:{running.port} (data dir {config.data_dir}, {config.slots} job slot(s), "
             f"GPUs: {','.join(config.gpus) or 'none'})")
    stop.wait()
    log.info("stopping: NOT_SERVING, %.0fs grace for in-flight RPCs, running jobs re-queued", grace_s)
    running.stop(grace_s)
    log.info("stopped")
