"""A seeded fuzz of every RPC on a real server: random well-formed messages (fields filled from the
descriptors with hostile values) and mangled bytes. Nothing a client sends may give INTERNAL or
UNKNOWN, and the server keeps serving."""

from __future__ import annotations

import random

import grpc
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2

from edgetune.server.transport.grpc_app import SERVICES
from tests.server.conftest import ServerProcess

SEED = 20261127
PER_METHOD = 40
STRINGS = ["", " ", "\x00", "ds-", "job-" + "f" * 12, "exp-" + "0" * 12, "../../etc/passwd", "/tmp/x", "%s%n",
           "\u0663", "x" * 5000, "\ud7ff\ue000", "fp32", "int8", "image", "text", "BYTES", "FP32", "a\nb"]
INTS = [0, 1, -1, 2, 64, 65, 2**31 - 1, -2**31, 2**62, -2**62]
FLOATS = [0.0, -0.0, 1e-300, -1.0, 1e300, float("inf"), float("-inf"), float("nan"), 0.5]
BYTES = [b"", b"\x00", b"\x89PNG\r\n\x1a\n", b"\xff" * 64, bytes(range(256)), b"PK\x03\x04" + b"\x00" * 40]


def fill(msg, rng: random.Random, depth: int = 0) -> None:
    for field in msg.DESCRIPTOR.fields:
        if rng.random() < 0.4:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 3:
                continue
            if field.message_type.GetOptions().map_entry:
                continue
            if field.is_repeated:
                for _ in range(rng.randint(0, 3)):
                    fill(getattr(msg, field.name).add(), rng, depth + 1)
            else:
                fill(getattr(msg, field.name), rng, depth + 1)
            continue
        values = [_scalar(field, rng) for _ in range(rng.randint(0, 4) if field.is_repeated else 1)]
        if field.is_repeated:
            getattr(msg, field.name).extend(values)
        else:
            setattr(msg, field.name, values[0])


def _scalar(field, rng: random.Random):
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if t == FieldDescriptor.TYPE_BYTES:
        return rng.choice(BYTES) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 2000))
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(FLOATS)
    if t == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [99])
    bits = 64 if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
                       FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64) else 32
    unsigned = t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
                     FieldDescriptor.TYPE_FIXED64)
    lo, hi = (0, 2**bits - 1) if unsigned else (-2**(bits - 1), 2**(bits - 1) - 1)
    return min(max(rng.choice(INTS), lo), hi)


def mangle(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if data and rng.random() < 0.6:
            data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data[rng.randint(0, len(data)):rng.randint(0, len(data))] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


def test_no_request_gives_internal_or_unknown_and_the_server_keeps_serving(tmp_path):
    from google.protobuf import message_factory

    server = ServerProcess(tmp_path / "data", "--reflection").start()
    rng = random.Random(SEED)
    codes: dict[str, int] = {}
    try:
        client = server.client()
        for service in SERVICES:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                cls = message_factory.GetMessageClass(method.input_type)
                for i in range(PER_METHOD):
                    msg = cls()
                    fill(msg, rng)
                    data = msg.SerializeToString()
                    if i % 4 == 3:
                        data = mangle(data, rng)
                    code = _call(client.channel, method, path, data)
                    codes[code.name] = codes.get(code.name, 0) + 1
                    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (path, data[:200])
        assert client.health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert client.list_base_models()
        client.close()
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert codes.get("INVALID_ARGUMENT", 0) > 100 and codes.get("NOT_FOUND", 0) > 20, codes
    assert "Traceback" not in server.log.read_text()


def _call(channel, method, path: str, data: bytes) -> grpc.StatusCode:
    ident = lambda b: b  # noqa: E731
    try:
        if method.client_streaming:
            rpc = channel.stream_unary(path, ident, ident) if not method.server_streaming else \
                channel.stream_stream(path, ident, ident)
            reply = rpc(iter([data, data]), timeout=20)
            if method.server_streaming:
                for _ in reply:
                    pass
        elif method.server_streaming:
            for _ in channel.unary_stream(path, ident, ident)(data, timeout=20):
                pass
        else:
            channel.unary_unary(path, ident, ident)(data, timeout=20)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK
