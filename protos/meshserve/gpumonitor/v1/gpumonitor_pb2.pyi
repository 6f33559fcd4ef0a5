import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]
    DEVICE_KIND_HOST: _ClassVar[DeviceKind]

class ReadingSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READING_SOURCE_UNSPECIFIED: _ClassVar[ReadingSource]
    READING_SOURCE_NVML: _ClassVar[ReadingSource]
    READING_SOURCE_HOST: _ClassVar[ReadingSource]
    READING_SOURCE_REPLAY: _ClassVar[ReadingSource]
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_GPU: DeviceKind
DEVICE_KIND_HOST: DeviceKind
READING_SOURCE_UNSPECIFIED: ReadingSource
READING_SOURCE_NVML: ReadingSource
READING_SOURCE_HOST: ReadingSource
READING_SOURCE_REPLAY: ReadingSource

class Device(_message.Message):
    __slots__ = ("device_id", "kind", "index", "name", "uuid")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    kind: DeviceKind
    index: int
    name: str
    uuid: str
    def __init__(self, device_id: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ...) -> None: ...

class DeviceReading(_message.Message):
    __slots__ = ("device", "memory_total_bytes", "memory_used_bytes", "utilization_percent", "temperature_celsius", "power_watts", "read_time")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    device: Device
    memory_total_bytes: int
    memory_used_bytes: int
    utilization_percent: float
    temperature_celsius: float
    power_watts: float
    read_time: _timestamp_pb2.Timestamp
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ..., memory_total_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., utilization_percent: _Optional[float] = ..., temperature_celsius: _Optional[float] = ..., power_watts: _Optional[float] = ..., read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("node_name", "source", "readings")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    source: ReadingSource
    readings: _containers.RepeatedCompositeFieldContainer[DeviceReading]
    def __init__(self, node_name: _Optional[str] = ..., source: _Optional[_Union[ReadingSource, str]] = ..., readings: _Optional[_Iterable[_Union[DeviceReading, _Mapping]]] = ...) -> None: ...

class WatchReadingsRequest(_message.Message):
    __slots__ = ("interval",)
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchReadingsResponse(_message.Message):
    __slots__ = ("node_name", "source", "readings")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    source: ReadingSource
    readings: _containers.RepeatedCompositeFieldContainer[DeviceReading]
    def __init__(self, node_name: _Optional[str] = ..., source: _Optional[_Union[ReadingSource, str]] = ..., readings: _Optional[_Iterable[_Union[DeviceReading, _Mapping]]] = ...) -> None: ...
