import datetime

from edgetune.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportModelRequest(_message.Message):
    __slots__ = ("job_id", "atol", "rtol", "allow_degenerate", "precisions")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATOL_FIELD_NUMBER: _ClassVar[int]
    RTOL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DEGENERATE_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    atol: float
    rtol: float
    allow_degenerate: bool
    precisions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., atol: _Optional[float] = ..., rtol: _Optional[float] = ..., allow_degenerate: _Optional[bool] = ..., precisions: _Optional[_Iterable[str]] = ...) -> None: ...

class ExportVariant(_message.Message):
    __slots__ = ("precision", "file", "bytes", "method", "accuracy", "fp32_accuracy", "top1_agreement", "latency_ms_batch1", "latency_ms_batch32", "speedup_batch1", "speedup_batch32", "flags")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FP32_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_BATCH1_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_BATCH32_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_BATCH1_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_BATCH32_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    precision: str
    file: str
    bytes: int
    method: str
    accuracy: float
    fp32_accuracy: float
    top1_agreement: float
    latency_ms_batch1: float
    latency_ms_batch32: float
    speedup_batch1: float
    speedup_batch32: float
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, precision: _Optional[str] = ..., file: _Optional[str] = ..., bytes: _Optional[int] = ..., method: _Optional[str] = ..., accuracy: _Optional[float] = ..., fp32_accuracy: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., latency_ms_batch1: _Optional[float] = ..., latency_ms_batch32: _Optional[float] = ..., speedup_batch1: _Optional[float] = ..., speedup_batch32: _Optional[float] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class DroppedVariant(_message.Message):
    __slots__ = ("precision", "reason")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    precision: str
    reason: str
    def __init__(self, precision: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ParityCase(_message.Message):
    __slots__ = ("name", "batch_size", "samples", "max_abs_diff", "max_rel_diff", "top1_agreement", "compared", "margin", "top1_compared", "top1_agreed", "ties", "reference", "candidate", "passed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_DIFF_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    TOP1_COMPARED_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREED_FIELD_NUMBER: _ClassVar[int]
    TIES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    batch_size: int
    samples: int
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    compared: str
    margin: float
    top1_compared: int
    top1_agreed: int
    ties: int
    reference: str
    candidate: str
    passed: bool
    def __init__(self, name: _Optional[str] = ..., batch_size: _Optional[int] = ..., samples: _Optional[int] = ..., max_abs_diff: _Optional[float] = ..., max_rel_diff: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., compared: _Optional[str] = ..., margin: _Optional[float] = ..., top1_compared: _Optional[int] = ..., top1_agreed: _Optional[int] = ..., ties: _Optional[int] = ..., reference: _Optional[str] = ..., candidate: _Optional[str] = ..., passed: _Optional[bool] = ...) -> None: ...

class ParityReport(_message.Message):
    __slots__ = ("passed", "atol", "max_abs_diff", "max_rel_diff", "top1_agreement", "cases", "rtol", "margin", "top1_compared", "precision", "providers", "problems")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    ATOL_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_DIFF_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    RTOL_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    TOP1_COMPARED_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    atol: float
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    cases: _containers.RepeatedCompositeFieldContainer[ParityCase]
    rtol: float
    margin: float
    top1_compared: int
    precision: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, passed: _Optional[bool] = ..., atol: _Optional[float] = ..., max_abs_diff: _Optional[float] = ..., max_rel_diff: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., cases: _Optional[_Iterable[_Union[ParityCase, _Mapping]]] = ..., rtol: _Optional[float] = ..., margin: _Optional[float] = ..., top1_compared: _Optional[int] = ..., precision: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class Export(_message.Message):
    __slots__ = ("id", "job_id", "create_time", "valid", "parity", "labels", "image_size", "opset", "model_sha256", "model_bytes", "error", "task", "max_length", "variants", "default_variant", "dropped_variants", "latency_cpu", "state", "precisions", "end_time", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    PARITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_CPU_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    job_id: str
    create_time: _timestamp_pb2.Timestamp
    valid: bool
    parity: ParityReport
    labels: _containers.RepeatedScalarFieldContainer[str]
    image_size: int
    opset: int
    model_sha256: str
    model_bytes: int
    error: str
    task: _jobs_pb2.Task
    max_length: int
    variants: _containers.RepeatedCompositeFieldContainer[ExportVariant]
    default_variant: str
    dropped_variants: _containers.RepeatedCompositeFieldContainer[DroppedVariant]
    latency_cpu: str
    state: _jobs_pb2.JobState
    precisions: _containers.RepeatedScalarFieldContainer[str]
    end_time: _timestamp_pb2.Timestamp
    owner: str
    def __init__(self, id: _Optional[str] = ..., job_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid: _Optional[bool] = ..., parity: _Optional[_Union[ParityReport, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., image_size: _Optional[int] = ..., opset: _Optional[int] = ..., model_sha256: _Optional[str] = ..., model_bytes: _Optional[int] = ..., error: _Optional[str] = ..., task: _Optional[_Union[_jobs_pb2.Task, str]] = ..., max_length: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[ExportVariant, _Mapping]]] = ..., default_variant: _Optional[str] = ..., dropped_variants: _Optional[_Iterable[_Union[DroppedVariant, _Mapping]]] = ..., latency_cpu: _Optional[str] = ..., state: _Optional[_Union[_jobs_pb2.JobState, str]] = ..., precisions: _Optional[_Iterable[str]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ...) -> None: ...

class BatchExportModelsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ExportModelRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ExportModelRequest, _Mapping]]] = ...) -> None: ...

class BatchExportResult(_message.Message):
    __slots__ = ("export", "code", "message")
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    export: Export
    code: int
    message: str
    def __init__(self, export: _Optional[_Union[Export, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class BatchExportModelsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchExportResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchExportResult, _Mapping]]] = ...) -> None: ...

class WatchExportRequest(_message.Message):
    __slots__ = ("export_id", "after_event_id")
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    after_event_id: int
    def __init__(self, export_id: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class GetExportRequest(_message.Message):
    __slots__ = ("export_id",)
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    def __init__(self, export_id: _Optional[str] = ...) -> None: ...

class ListExportsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExportsResponse(_message.Message):
    __slots__ = ("exports", "next_page_token")
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    exports: _containers.RepeatedCompositeFieldContainer[Export]
    next_page_token: str
    def __init__(self, exports: _Optional[_Iterable[_Union[Export, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("export_id",)
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    def __init__(self, export_id: _Optional[str] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("data", "offset", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
