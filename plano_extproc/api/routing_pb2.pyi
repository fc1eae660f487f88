from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    API_FORMAT_UNSPECIFIED: _ClassVar[ApiFormat]
    OPENAI_CHAT: _ClassVar[ApiFormat]
    ANTHROPIC_MESSAGES: _ClassVar[ApiFormat]
    OPENAI_RESPONSES: _ClassVar[ApiFormat]
API_FORMAT_UNSPECIFIED: ApiFormat
OPENAI_CHAT: ApiFormat
ANTHROPIC_MESSAGES: ApiFormat
OPENAI_RESPONSES: ApiFormat

class DecideRequest(_message.Message):
    __slots__ = ("api_format", "body", "affinity_id", "traceparent", "api")
    API_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    api_format: ApiFormat
    body: bytes
    affinity_id: str
    traceparent: str
    api: str
    def __init__(self, api_format: _Optional[_Union[ApiFormat, str]] = ..., body: _Optional[bytes] = ..., affinity_id: _Optional[str] = ..., traceparent: _Optional[str] = ..., api: _Optional[str] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("models", "model", "route", "source", "trace_id", "session_id", "pinned")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    model: str
    route: str
    source: str
    trace_id: str
    session_id: str
    pinned: bool
    def __init__(self, models: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., route: _Optional[str] = ..., source: _Optional[str] = ..., trace_id: _Optional[str] = ..., session_id: _Optional[str] = ..., pinned: _Optional[bool] = ...) -> None: ...
