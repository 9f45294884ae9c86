from edgetune.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BaseWeights(_message.Message):
    __slots__ = ("name", "available", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class BaseModel(_message.Message):
    __slots__ = ("arch", "family", "task", "methods", "weights")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    arch: str
    family: str
    task: _jobs_pb2.Task
    methods: _containers.RepeatedScalarFieldContainer[_jobs_pb2.Method]
    weights: _containers.RepeatedCompositeFieldContainer[BaseWeights]
    def __init__(self, arch: _Optional[str] = ..., family: _Optional[str] = ..., task: _Optional[_Union[_jobs_pb2.Task, str]] = ..., methods: _Optional[_Iterable[_Union[_jobs_pb2.Method, str]]] = ..., weights: _Optional[_Iterable[_Union[BaseWeights, _Mapping]]] = ...) -> None: ...

class ListBaseModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBaseModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[BaseModel]
    def __init__(self, models: _Optional[_Iterable[_Union[BaseModel, _Mapping]]] = ...) -> None: ...
