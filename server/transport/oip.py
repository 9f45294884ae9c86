"""The Open Inference Protocol (KServe V2 / Triton) gRPC service over exports: tensors in and out
of ``Inference.infer``. Only this module knows the protocol's tensor encodings."""

from __future__ import annotations

import struct
import time

import numpy as np

from edgetune import __version__
from edgetune.errors import EdgetuneError, InvalidArgument
from edgetune.oip import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc

from edgetune.server.metrics import Metrics
from edgetune.server.service import EdgetuneService
from edgetune.server.service.inference import OUTPUTS

# datatype -> (numpy dtype, InferTensorContents field); FP16 comes raw only (no typed field).
DTYPES = {"BOOL": (np.bool_, "bool_contents"), "INT8": (np.int8, "int_contents"), "INT16": (np.int16, "int_contents"),
          "INT32": (np.int32, "int_contents"), "INT64": (np.int64, "int64_contents"),
          "UINT8": (np.uint8, "uint_contents"), "UINT16": (np.uint16, "uint_contents"),
          "UINT32": (np.uint32, "uint_contents"), "UINT64": (np.uint64, "uint64_contents"),
          "FP16": (np.float16, None), "FP32": (np.float32, "fp32_contents"), "FP64": (np.float64, "fp64_contents"),
          "BYTES": (None, "bytes_contents")}
MAX_ELEMENTS = 64 * 3 * 1024 * 1024  # 64 images of 1024 x 1024 (the largest image_size)
MAX_DIMS = 8


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray | list[bytes]]:
    """Each input tensor as a numpy array (BYTES: a list of bytes), its size checked against its
    shape and datatype; InvalidArgument names ``inputs[i]``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument("raw_input_contents", f"{len(raw)} entries for {len(request.inputs)} inputs")
    out: dict[str, np.ndarray | list[bytes]] = {}
    for i, t in enumerate(request.inputs):
        field = f"inputs[{i}]"
        if t.datatype not in DTYPES:
            raise InvalidArgument(f"{field}.datatype", f"unknown datatype {t.datatype[:20]!r}; one of {', '.join(DTYPES)}")
        if not 1 <= len(t.shape) <= MAX_DIMS or any(not 0 <= d <= MAX_ELEMENTS for d in t.shape):
            raise InvalidArgument(f"{field}.shape", f"1 to {MAX_DIMS} dimensions, each 0 to {MAX_ELEMENTS}")
        count = 1
        for d in t.shape:
            count *= d
        if count > MAX_ELEMENTS:
            raise InvalidArgument(f"{field}.shape", f"more than {MAX_ELEMENTS} elements")
        if t.name in out:
            raise InvalidArgument(f"{field}.name", f"input {t.name[:64]!r} sent twice")
        dtype, contents = DTYPES[t.datatype]
        typed = t.HasField("contents") and any(True for _ in t.contents.ListFields())
        if raw and typed:
            raise InvalidArgument(f"{field}.contents", "send raw_input_contents or typed contents, not both")
        if raw:
            value = _from_raw(raw[i], t.datatype, dtype, count, field)
        else:
            if contents is None:
                raise InvalidArgument(f"{field}.contents", f"{t.datatype} travels in raw_input_contents only")
            values = getattr(t.contents, contents)
            if len(values) != count:
                raise InvalidArgument(f"{field}.contents", f"{len(values)} values for shape {list(t.shape)} "
                                                           f"({count} elements)")
            value = list(values) if dtype is None else _typed(values, dtype, field)
        if dtype is None and len(t.shape) != 1:
            raise InvalidArgument(f"{field}.shape", "BYTES inputs are one-dimensional: [N]")
        out[t.name] = value if dtype is None else value.reshape(tuple(t.shape))
    return out


def _typed(values, dtype, field: str) -> np.ndarray:
    """Typed contents as ``dtype``; an integer out of its range is refused, never wrapped."""
    if np.issubdtype(dtype, np.integer):
        wide = np.array(values, np.uint64 if np.issubdtype(dtype, np.unsignedinteger) else np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidArgument(f"{field}.contents", f"values outside the range of {np.dtype(dtype).name}")
        return wide.astype(dtype)
    return np.array(values, dtype)


def _from_raw(data: bytes, datatype: str, dtype, count: int, field: str) -> np.ndarray | list[bytes]:
    if dtype is not None:
        size = np.dtype(dtype).itemsize * count
        if len(data) != size:
            raise InvalidArgument(f"{field}.raw", f"{len(data)} bytes; shape and {datatype} make {size}")
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    items, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise InvalidArgument(f"{field}.raw", "a BYTES element's 4-byte length is cut off")
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise InvalidArgument(f"{field}.raw", f"element {len(items)} claims {n} bytes past the end")
        items.append(bytes(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    if len(items) != count:
        raise InvalidArgument(f"{field}.raw", f"{len(items)} BYTES elements for {count} in the shape")
    return items


def _tensor(name: str, value: np.ndarray | list[bytes], raw: bool, response: pb.ModelInferResponse) -> None:
    if isinstance(value, list):
        datatype, shape = "BYTES", [len(value)]
    else:
        datatype = next(k for k, (d, _) in DTYPES.items() if d is not None and np.dtype(d) == value.dtype)
        shape = list(value.shape)
    out = response.outputs.add(name=name, datatype=datatype, shape=shape)
    if raw:
        response.raw_output_contents.append(
            b"".join(struct.pack("<I", len(b)) + b for b in value) if isinstance(value, list)
            else value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
    elif isinstance(value, list):
        out.contents.bytes_contents.extend(value)
    else:
        getattr(out.contents, DTYPES[datatype][1]).extend(value.ravel().tolist())


def _model_fields(e: EdgetuneError) -> EdgetuneError:
    """Errors in the protocol's field names (an export is a model here)."""
    subject = {"export_id": "model_name", "variant": "model_version"}.get(e.subject, e.subject)
    return type(e)(subject, e.message) if subject != e.subject else e


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: EdgetuneService, metrics: Metrics):
        self.s, self.metrics = service, metrics
        self.serving = False  # set by the server once recovery has run, cleared when it stops

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.serving)

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="edgetune", version=__version__, extensions=[])

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.serving and self.s.inference.ready(request.name, request.version))

    def ModelMetadata(self, request, context):
        try:
            info = self.s.inference.model_info(request.name)
        except EdgetuneError as e:
            raise _model_fields(e) from None
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=info.name, versions=list(info.versions), platform="onnxruntime_onnx",
            inputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in info.inputs],
            outputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in info.outputs])

    def ModelInfer(self, request, context):
        wanted = [o.name for o in request.outputs] or list(OUTPUTS)
        unknown = [w for w in wanted if w not in OUTPUTS]
        if unknown:
            raise InvalidArgument("outputs", f"unknown output {unknown[0][:64]!r}; one of {', '.join(OUTPUTS)}")
        start = time.perf_counter()
        try:
            outputs = self.s.inference.infer(request.model_name, request.model_version, decode_inputs(request))
        except EdgetuneError as e:
            raise _model_fields(e) from None
        self.metrics.inference.labels(request.model_name, "ModelInfer").observe(time.perf_counter() - start)
        response = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version,
                                         id=request.id)
        for name in wanted:
            _tensor(name, outputs[name], bool(request.raw_input_contents), response)
        return response
