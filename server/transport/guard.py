"""The one interceptor every RPC passes: who calls (bearer token, scope), how many run at once,
requests that do not parse, and domain errors as status codes with field violations.

Order per call: authenticate (health is exempt) -> scope of the method -> a concurrency slot
(health checks never need one, so they are never starved) -> the servicer, which reads the
caller from ``context.principal`` -> errors mapped, client strings cut short, server paths
removed from every text a client sees.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections import Counter
from pathlib import Path

import grpc
from google.protobuf import any_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from edgetune.errors import (AlreadyExists, DataError, DeadlineExceeded, EdgetuneError, FailedPrecondition, InvalidArgument, NotFound,
                             ParityError, PermissionDenied, ResourceExhausted, Unauthenticated, WeightsError)

from edgetune.server.auth import ANONYMOUS, INFERENCE, JOBS, Principal, TokenFile
from edgetune.server.metrics import Metrics

log = logging.getLogger("edgetune.server")

STATUS = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT), (DataError, grpc.StatusCode.INVALID_ARGUMENT),
    (WeightsError, grpc.StatusCode.INVALID_ARGUMENT), (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS), (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ParityError, grpc.StatusCode.FAILED_PRECONDITION), (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED), (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]
ANY = "any"  # any authenticated caller
# The scope each service needs; a method of a service not listed here is refused (fail closed).
SCOPES = {
    "edgetune.v1.Datasets": JOBS, "edgetune.v1.Jobs": JOBS, "edgetune.v1.Models": JOBS,
    "edgetune.v1.Exports": JOBS, "edgetune.v1.Inference": INFERENCE, "inference.GRPCInferenceService": INFERENCE,
    "grpc.reflection.v1alpha.ServerReflection": ANY, "grpc.reflection.v1.ServerReflection": ANY,
}
HEALTH = "grpc.health.v1.Health"
HEALTH_CHECK = f"/{HEALTH}/Check"
HEALTH_WATCH = f"/{HEALTH}/Watch"
# Probes: no token, no slot (they answer from memory and must never wait behind other calls).
PROBES = {HEALTH_CHECK, "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"}
MAX_HEALTH_WATCHES = 4  # open health Watch streams (no token needed): their own slots, never the API's
MAX_DETAILS = 1000  # characters of a status message (gRPC's trailer is bounded)
_SERVER_TEXT = {"error", "log", "warnings", "reason", "problems", "message", "corrupt_files"}  # server-written
_ABS_PATH = re.compile(r"(?<![\w.:/~>-])/(?:[^\s/'\"]+/)+[^\s/'\",;)]*")


def status_of(error: EdgetuneError) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


class Redactor:
    """Removes paths from the texts the server writes itself (status messages, errors, log lines,
    warnings, reasons): the server's own directories become ``<server>``, any other absolute path
    ``<path>``. What clients sent (names, labels, prompts) and generated text pass untouched."""

    def __init__(self, roots: list[str | Path]):
        names = {str(Path(r).resolve()) for r in roots}
        self.roots = [r for r in sorted(names, key=len, reverse=True) if len(r) >= 4]
        self._pattern = re.compile("|".join(r"(?<![\w.:/~-])" + re.escape(r) + r"(?=/|\b|$)" for r in self.roots)) \
            if self.roots else None

    @classmethod
    def for_server(cls, data_dir: Path, cache_root: Path) -> Redactor:
        roots = [data_dir, cache_root, tempfile.gettempdir(), Path.cwd()]
        try:
            roots.append(Path.home())
        except RuntimeError:  # no HOME and no passwd entry for this uid
            pass
        catalog = os.environ.get("EDGETUNE_CATALOG")
        if catalog:
            roots += [Path(catalog), Path(catalog).parent]
        return cls([r for r in roots if str(Path(r).resolve()) != "/"])

    def text(self, s: str) -> str:
        if self._pattern is not None:
            s = self._pattern.sub("<server>", s)
        return _ABS_PATH.sub("<path>", s)

    def message(self, msg: Message) -> Message:
        """``msg`` with the server-written string fields cleaned, in place (nested messages too)."""
        for field, value in msg.ListFields():
            if field.type == FieldDescriptor.TYPE_STRING:
                if field.name not in _SERVER_TEXT:
                    continue
                if field.is_repeated:
                    value[:] = [self.text(v) for v in value]
                else:
                    setattr(msg, field.name, self.text(value))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry:
                    continue
                for m in (value if field.is_repeated else [value]):
                    self.message(m)
        return msg


class Slots:
    """Concurrent calls allowed: ``limit`` in all, ``per_principal`` for one caller."""

    def __init__(self, limit: int, per_principal: int):
        self.limit, self.per_principal = limit, per_principal
        self._lock = threading.Lock()
        self._by = Counter()
        self.in_use = 0

    def take(self, who: str) -> bool:
        with self._lock:
            if self.in_use >= self.limit or self._by[who] >= self.per_principal:
                return False
            self.in_use += 1
            self._by[who] += 1
            return True

    def give(self, who: str) -> None:
        with self._lock:
            self.in_use -= 1
            self._by[who] -= 1
            if not self._by[who]:
                del self._by[who]


class CallContext:
    """The servicer's context plus the caller: ``context.principal``."""

    def __init__(self, context: grpc.ServicerContext, principal: Principal):
        self._context, self.principal = context, principal

    def __getattr__(self, name):
        return getattr(self._context, name)


class _Undecodable:
    def __init__(self, error: Exception):
        self.error = error


def _lenient(deserializer):
    """Request bytes that are not the message become a marker the call turns into INVALID_ARGUMENT
    (grpc itself would answer INTERNAL, which the API reserves for server bugs)."""
    if deserializer is None:
        return None

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - DecodeError, RecursionError, ...
            return _Undecodable(e)
    return parse


def _checked(request):
    if isinstance(request, _Undecodable):
        raise InvalidArgument("request", "the request bytes are not a valid message of this method's type")
    return request


class Guard(grpc.ServerInterceptor):
    def __init__(self, tokens: TokenFile | None, slots: Slots, redactor: Redactor, metrics: Metrics | None = None):
        self.tokens, self.slots, self.redactor, self.metrics = tokens, slots, redactor, metrics
        self.watch_slots = Slots(MAX_HEALTH_WATCHES, MAX_HEALTH_WATCHES)

    # -- who calls
    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        if self.tokens is None:
            return ANONYMOUS
        header = [v for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
        if not header:
            raise Unauthenticated("authorization", "this server needs a bearer token (metadata "
                                                   "'authorization: Bearer <token>')")
        scheme, _, token = header[0].partition(" ")
        principal = self.tokens.principal(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Unauthenticated("authorization", "unknown or malformed bearer token")
        return principal

    @staticmethod
    def authorize(principal: Principal, method: str) -> None:
        name = method.lstrip("/")  # "service/Method": a leading slash would read as a path
        scope = SCOPES.get(name.split("/")[0])
        if scope is None:
            raise PermissionDenied("method", f"{name} is not served to clients")
        if scope != ANY and not principal.can(scope):
            raise PermissionDenied("authorization", f"{name} needs the {scope!r} scope "
                                                    f"(this token has {', '.join(sorted(principal.scopes))})")

    # -- errors
    def count(self, method: str, code: grpc.StatusCode) -> None:
        if self.metrics is not None:
            self.metrics.rpcs.labels(method, code.name).inc()

    def fail(self, context: grpc.ServicerContext, method: str, e: Exception):
        if not isinstance(e, EdgetuneError):
            if isinstance(e, grpc.RpcError) or not context.is_active():  # the client went away
                log.info("%s: the client went away (%s: %s)", method, type(e).__name__, e)
                self.count(method, grpc.StatusCode.CANCELLED)
                context.abort(grpc.StatusCode.CANCELLED, "the client cancelled the call")
            log.exception("%s failed", method)
            self.count(method, grpc.StatusCode.INTERNAL)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
        code = status_of(e)
        self.count(method, code)
        subject = self.redactor.text(e.subject)[:200]
        text = self.redactor.text(f"{subject}: {e.message}")
        if len(text) > MAX_DETAILS:
            text = text[:MAX_DETAILS] + "..."
        context.abort_with_status(rpc_status.to_status(status_pb2.Status(
            code=code.value[0], message=text, details=_details(e, code, subject, text))))

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        guard = self
        public = method.startswith(f"/{HEALTH}/") or method in PROBES
        # Probes take no slot (they never wait for the API's calls); health watches have their
        # own few. A unary reply's slot is given back when the handler returns (a client that
        # cancels does not free the thread still working for it); a reply stream's also when the
        # call ends, since grpc stops pulling it then.
        slots = None if method in PROBES else guard.watch_slots if method == HEALTH_WATCH else guard.slots
        streams_out = handler.unary_stream is not None or handler.stream_stream is not None

        def enter(context) -> tuple[CallContext, object]:
            principal = ANONYMOUS if public else guard.authenticate(context)
            if not public:
                guard.authorize(principal, method)
            if slots is None:
                return CallContext(context, principal), None
            if not slots.take(principal.name):
                raise ResourceExhausted("server", f"too many calls in progress ({slots.in_use}); retry "
                                                  "with backoff")
            once = threading.Lock()

            def give():
                if once.acquire(blocking=False):
                    slots.give(principal.name)
            if streams_out:
                context.add_callback(give)
            return CallContext(context, principal), give

        def unary(fn, stream_in):
            def call(req, context):
                give = None
                try:
                    ctx, give = enter(context)
                    reply = fn(_stream(req) if stream_in else _checked(req), ctx)
                    guard.count(method, grpc.StatusCode.OK)
                    return reply
                except Exception as e:  # noqa: BLE001 - mapped by fail()
                    guard.fail(context, method, e)
                finally:
                    if give:
                        give()
            return call

        def streaming(fn, stream_in):
            def call(req, context):
                give = None
                try:
                    ctx, give = enter(context)
                    for msg in fn(_stream(req) if stream_in else _checked(req), ctx):
                        yield msg
                    guard.count(method, grpc.StatusCode.OK)
                except Exception as e:  # noqa: BLE001
                    guard.fail(context, method, e)
                finally:
                    if give:
                        give()
            return call

        def serialize(msg):
            return handler.response_serializer(guard.redactor.message(msg)) if handler.response_serializer else msg

        kw = dict(request_deserializer=_lenient(handler.request_deserializer), response_serializer=serialize)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, False), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream, False), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, True), **kw)
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream, True), **kw)


def _stream(requests):
    for r in requests:
        yield _checked(r)


def _details(e: EdgetuneError, code: grpc.StatusCode, subject: str, text: str) -> list[any_pb2.Any]:
    """google.rpc error details beside the readable message: BadRequest field violations for
    invalid arguments, PreconditionFailure, QuotaFailure, ResourceInfo for NOT_FOUND."""
    description = text[len(subject) + 2:]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        detail = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=subject, description=description)])
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        detail = error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(type="STATE", subject=subject, description=description)])
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        detail = error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)])
    elif code == grpc.StatusCode.NOT_FOUND:
        detail = error_details_pb2.ResourceInfo(resource_type=subject, description=description)
    else:
        detail = error_details_pb2.ErrorInfo(reason=code.name, domain="edgetune", metadata={"field": subject})
    packed = any_pb2.Any()
    packed.Pack(detail)
    return [packed]

