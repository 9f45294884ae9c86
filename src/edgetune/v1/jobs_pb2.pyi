import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_IMAGE_CLASSIFICATION: _ClassVar[Task]
    TASK_TEXT_CLASSIFICATION: _ClassVar[Task]
    TASK_TEXT_GENERATION: _ClassVar[Task]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_FULL: _ClassVar[Method]
    METHOD_LINEAR_PROBE: _ClassVar[Method]
    METHOD_LORA: _ClassVar[Method]
    METHOD_IA3: _ClassVar[Method]
    METHOD_PROMPT_TUNING: _ClassVar[Method]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
TASK_UNSPECIFIED: Task
TASK_IMAGE_CLASSIFICATION: Task
TASK_TEXT_CLASSIFICATION: Task
TASK_TEXT_GENERATION: Task
METHOD_UNSPECIFIED: Method
METHOD_FULL: Method
METHOD_LINEAR_PROBE: Method
METHOD_LORA: Method
METHOD_IA3: Method
METHOD_PROMPT_TUNING: Method

class Hyperparameters(_message.Message):
    __slots__ = ("epochs", "learning_rate", "batch_size", "image_size", "optimizer", "weight_decay", "label_smoothing", "early_stopping_patience", "augment", "seed", "max_length")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    learning_rate: float
    batch_size: int
    image_size: int
    optimizer: str
    weight_decay: float
    label_smoothing: float
    early_stopping_patience: int
    augment: bool
    seed: int
    max_length: int
    def __init__(self, epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., image_size: _Optional[int] = ..., optimizer: _Optional[str] = ..., weight_decay: _Optional[float] = ..., label_smoothing: _Optional[float] = ..., early_stopping_patience: _Optional[int] = ..., augment: _Optional[bool] = ..., seed: _Optional[int] = ..., max_length: _Optional[int] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("task", "base_model", "weights", "method", "hyperparameters", "dataset_id", "idempotency_key", "gpus")
    TASK_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    task: Task
    base_model: str
    weights: str
    method: Method
    hyperparameters: Hyperparameters
    dataset_id: str
    idempotency_key: str
    gpus: int
    def __init__(self, task: _Optional[_Union[Task, str]] = ..., base_model: _Optional[str] = ..., weights: _Optional[str] = ..., method: _Optional[_Union[Method, str]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., dataset_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., gpus: _Optional[int] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "seconds", "val_perplexity")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_MACRO_F1_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    VAL_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    val_perplexity: float
    def __init__(self, epoch: _Optional[int] = ..., train_loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ..., val_macro_f1: _Optional[float] = ..., seconds: _Optional[float] = ..., val_perplexity: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "task", "base_model", "weights", "method", "hyperparameters", "dataset_id", "idempotency_key", "create_time", "start_time", "end_time", "error", "epoch", "epochs", "best", "attempts", "warnings", "gpus", "owner", "cancel_requested", "resolved_hyperparameters")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    task: Task
    base_model: str
    weights: str
    method: Method
    hyperparameters: Hyperparameters
    dataset_id: str
    idempotency_key: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: str
    epoch: int
    epochs: int
    best: EpochMetrics
    attempts: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    gpus: int
    owner: str
    cancel_requested: bool
    resolved_hyperparameters: Hyperparameters
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., task: _Optional[_Union[Task, str]] = ..., base_model: _Optional[str] = ..., weights: _Optional[str] = ..., method: _Optional[_Union[Method, str]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., dataset_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., best: _Optional[_Union[EpochMetrics, _Mapping]] = ..., attempts: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ..., gpus: _Optional[int] = ..., owner: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., resolved_hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_event_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_event_id: int
    def __init__(self, job_id: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class StepProgress(_message.Message):
    __slots__ = ("epoch", "epochs", "step", "steps", "loss", "learning_rate", "eta_seconds")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    learning_rate: float
    eta_seconds: float
    def __init__(self, epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., step: _Optional[int] = ..., steps: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("id", "job_id", "time", "state", "epoch", "step", "log")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    id: int
    job_id: str
    time: _timestamp_pb2.Timestamp
    state: JobState
    epoch: EpochMetrics
    step: StepProgress
    log: str
    def __init__(self, id: _Optional[int] = ..., job_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., epoch: _Optional[_Union[EpochMetrics, _Mapping]] = ..., step: _Optional[_Union[StepProgress, _Mapping]] = ..., log: _Optional[str] = ...) -> None: ...
