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

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]

class PressureLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESSURE_LEVEL_UNSPECIFIED: _ClassVar[PressureLevel]
    PRESSURE_LEVEL_LOW: _ClassVar[PressureLevel]
    PRESSURE_LEVEL_NORMAL: _ClassVar[PressureLevel]
    PRESSURE_LEVEL_HIGH: _ClassVar[PressureLevel]
    PRESSURE_LEVEL_CRITICAL: _ClassVar[PressureLevel]
    PRESSURE_LEVEL_EMERGENCY: _ClassVar[PressureLevel]

class SlotOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SLOT_OUTCOME_UNSPECIFIED: _ClassVar[SlotOutcome]
    SLOT_OUTCOME_SUCCEEDED: _ClassVar[SlotOutcome]
    SLOT_OUTCOME_FAILED: _ClassVar[SlotOutcome]
    SLOT_OUTCOME_CANCELLED: _ClassVar[SlotOutcome]
    SLOT_OUTCOME_OUT_OF_MEMORY: _ClassVar[SlotOutcome]

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]
    DEVICE_KIND_HOST: _ClassVar[DeviceKind]

class EndpointHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_HEALTH_UNSPECIFIED: _ClassVar[EndpointHealth]
    ENDPOINT_HEALTH_SERVING: _ClassVar[EndpointHealth]
    ENDPOINT_HEALTH_NOT_SERVING: _ClassVar[EndpointHealth]
    ENDPOINT_HEALTH_UNREACHABLE: _ClassVar[EndpointHealth]

class ThermalState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THERMAL_STATE_UNSPECIFIED: _ClassVar[ThermalState]
    THERMAL_STATE_NORMAL: _ClassVar[ThermalState]
    THERMAL_STATE_REDUCE: _ClassVar[ThermalState]
    THERMAL_STATE_PAUSE: _ClassVar[ThermalState]
    THERMAL_STATE_STOP: _ClassVar[ThermalState]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_CRITICAL: Priority
PRESSURE_LEVEL_UNSPECIFIED: PressureLevel
PRESSURE_LEVEL_LOW: PressureLevel
PRESSURE_LEVEL_NORMAL: PressureLevel
PRESSURE_LEVEL_HIGH: PressureLevel
PRESSURE_LEVEL_CRITICAL: PressureLevel
PRESSURE_LEVEL_EMERGENCY: PressureLevel
SLOT_OUTCOME_UNSPECIFIED: SlotOutcome
SLOT_OUTCOME_SUCCEEDED: SlotOutcome
SLOT_OUTCOME_FAILED: SlotOutcome
SLOT_OUTCOME_CANCELLED: SlotOutcome
SLOT_OUTCOME_OUT_OF_MEMORY: SlotOutcome
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_GPU: DeviceKind
DEVICE_KIND_HOST: DeviceKind
ENDPOINT_HEALTH_UNSPECIFIED: EndpointHealth
ENDPOINT_HEALTH_SERVING: EndpointHealth
ENDPOINT_HEALTH_NOT_SERVING: EndpointHealth
ENDPOINT_HEALTH_UNREACHABLE: EndpointHealth
THERMAL_STATE_UNSPECIFIED: ThermalState
THERMAL_STATE_NORMAL: ThermalState
THERMAL_STATE_REDUCE: ThermalState
THERMAL_STATE_PAUSE: ThermalState
THERMAL_STATE_STOP: ThermalState

class SlotAsk(_message.Message):
    __slots__ = ("model", "fallback_models", "priority", "caller_id", "request_id", "prompt_tokens", "max_tokens", "limits")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    model: str
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    priority: Priority
    caller_id: str
    request_id: str
    prompt_tokens: int
    max_tokens: int
    limits: CallerLimits
    def __init__(self, model: _Optional[str] = ..., fallback_models: _Optional[_Iterable[str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., caller_id: _Optional[str] = ..., request_id: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., limits: _Optional[_Union[CallerLimits, _Mapping]] = ...) -> None: ...

class CallerLimits(_message.Message):
    __slots__ = ("requests_per_minute", "tokens_per_minute", "max_concurrent", "max_priority")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    tokens_per_minute: int
    max_concurrent: int
    max_priority: Priority
    def __init__(self, requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., max_priority: _Optional[_Union[Priority, str]] = ...) -> None: ...

class SlotRelease(_message.Message):
    __slots__ = ("outcome", "time_to_first_token", "output_tokens", "input_tokens")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    outcome: SlotOutcome
    time_to_first_token: _duration_pb2.Duration
    output_tokens: int
    input_tokens: int
    def __init__(self, outcome: _Optional[_Union[SlotOutcome, str]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., output_tokens: _Optional[int] = ..., input_tokens: _Optional[int] = ...) -> None: ...

class AcquireSlotRequest(_message.Message):
    __slots__ = ("ask", "release")
    ASK_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    ask: SlotAsk
    release: SlotRelease
    def __init__(self, ask: _Optional[_Union[SlotAsk, _Mapping]] = ..., release: _Optional[_Union[SlotRelease, _Mapping]] = ...) -> None: ...

class QueuePosition(_message.Message):
    __slots__ = ("position", "queue_depth")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    position: int
    queue_depth: int
    def __init__(self, position: _Optional[int] = ..., queue_depth: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("endpoint_id", "model", "address", "device_id", "node_name")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    model: str
    address: str
    device_id: str
    node_name: str
    def __init__(self, endpoint_id: _Optional[str] = ..., model: _Optional[str] = ..., address: _Optional[str] = ..., device_id: _Optional[str] = ..., node_name: _Optional[str] = ...) -> None: ...

class SlotGrant(_message.Message):
    __slots__ = ("slot_id", "endpoint", "model", "pressure_level", "queue_wait")
    SLOT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRESSURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    slot_id: str
    endpoint: Endpoint
    model: str
    pressure_level: PressureLevel
    queue_wait: _duration_pb2.Duration
    def __init__(self, slot_id: _Optional[str] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., model: _Optional[str] = ..., pressure_level: _Optional[_Union[PressureLevel, str]] = ..., queue_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AcquireSlotResponse(_message.Message):
    __slots__ = ("queued", "granted", "recalled", "lost")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    RECALLED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    queued: QueuePosition
    granted: SlotGrant
    recalled: SlotRecall
    lost: SlotLost
    def __init__(self, queued: _Optional[_Union[QueuePosition, _Mapping]] = ..., granted: _Optional[_Union[SlotGrant, _Mapping]] = ..., recalled: _Optional[_Union[SlotRecall, _Mapping]] = ..., lost: _Optional[_Union[SlotLost, _Mapping]] = ...) -> None: ...

class SlotLost(_message.Message):
    __slots__ = ("slot_id", "reason")
    SLOT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    slot_id: str
    reason: str
    def __init__(self, slot_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SlotRecall(_message.Message):
    __slots__ = ("slot_id",)
    SLOT_ID_FIELD_NUMBER: _ClassVar[int]
    slot_id: str
    def __init__(self, slot_id: _Optional[str] = ...) -> None: ...

class GetSchedulerStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceState(_message.Message):
    __slots__ = ("device_id", "capacity_bytes", "reserved_bytes", "measured_used_bytes", "pressure_level", "temperature_celsius", "read_time", "node_name", "kind", "name", "memory_total_bytes", "utilization_percent", "power_watts", "peak_reserved_bytes", "thermal_state", "silent")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRESSURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    PEAK_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    THERMAL_STATE_FIELD_NUMBER: _ClassVar[int]
    SILENT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    capacity_bytes: int
    reserved_bytes: int
    measured_used_bytes: int
    pressure_level: PressureLevel
    temperature_celsius: float
    read_time: _timestamp_pb2.Timestamp
    node_name: str
    kind: DeviceKind
    name: str
    memory_total_bytes: int
    utilization_percent: float
    power_watts: float
    peak_reserved_bytes: int
    thermal_state: ThermalState
    silent: bool
    def __init__(self, device_id: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., reserved_bytes: _Optional[int] = ..., measured_used_bytes: _Optional[int] = ..., pressure_level: _Optional[_Union[PressureLevel, str]] = ..., temperature_celsius: _Optional[float] = ..., read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_name: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., name: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., utilization_percent: _Optional[float] = ..., power_watts: _Optional[float] = ..., peak_reserved_bytes: _Optional[int] = ..., thermal_state: _Optional[_Union[ThermalState, str]] = ..., silent: _Optional[bool] = ...) -> None: ...

class QueueDepth(_message.Message):
    __slots__ = ("priority", "depth")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    priority: Priority
    depth: int
    def __init__(self, priority: _Optional[_Union[Priority, str]] = ..., depth: _Optional[int] = ...) -> None: ...

class EndpointState(_message.Message):
    __slots__ = ("endpoint", "total_slots", "used_slots", "resident", "circuit_open", "health", "engine", "context_length", "memory_footprint_bytes", "first_token_latency", "failure_rate")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    USED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_OPEN_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FOOTPRINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_LATENCY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    total_slots: int
    used_slots: int
    resident: bool
    circuit_open: bool
    health: EndpointHealth
    engine: str
    context_length: int
    memory_footprint_bytes: int
    first_token_latency: _duration_pb2.Duration
    failure_rate: float
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., total_slots: _Optional[int] = ..., used_slots: _Optional[int] = ..., resident: _Optional[bool] = ..., circuit_open: _Optional[bool] = ..., health: _Optional[_Union[EndpointHealth, str]] = ..., engine: _Optional[str] = ..., context_length: _Optional[int] = ..., memory_footprint_bytes: _Optional[int] = ..., first_token_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failure_rate: _Optional[float] = ...) -> None: ...

class GetSchedulerStateResponse(_message.Message):
    __slots__ = ("devices", "queue", "endpoints")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceState]
    queue: _containers.RepeatedCompositeFieldContainer[QueueDepth]
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointState]
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceState, _Mapping]]] = ..., queue: _Optional[_Iterable[_Union[QueueDepth, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[EndpointState, _Mapping]]] = ...) -> None: ...

class EndpointRegistration(_message.Message):
    __slots__ = ("endpoint", "total_slots", "running_requests")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    total_slots: int
    running_requests: int
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., total_slots: _Optional[int] = ..., running_requests: _Optional[int] = ...) -> None: ...

class EndpointHeartbeat(_message.Message):
    __slots__ = ("running_requests",)
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    running_requests: int
    def __init__(self, running_requests: _Optional[int] = ...) -> None: ...

class RegisterEndpointRequest(_message.Message):
    __slots__ = ("registration", "heartbeat")
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    registration: EndpointRegistration
    heartbeat: EndpointHeartbeat
    def __init__(self, registration: _Optional[_Union[EndpointRegistration, _Mapping]] = ..., heartbeat: _Optional[_Union[EndpointHeartbeat, _Mapping]] = ...) -> None: ...

class RegisterEndpointResponse(_message.Message):
    __slots__ = ("endpoint_id", "heartbeat_interval")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, endpoint_id: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
