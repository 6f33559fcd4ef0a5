"""Proto messages to domain objects and back, for the GPU monitor servicer."""

from __future__ import annotations

from meshserve.gpumonitor.v1 import gpumonitor_pb2 as pb

from services.gpu_monitor.core.readings import DeviceKind, DeviceReading, Snapshot, SourceKind
from services.shared.errors import invalid_argument

_NANOS_PER_SECOND = 1_000_000_000
_KINDS = {DeviceKind.GPU: pb.DEVICE_KIND_GPU, DeviceKind.HOST: pb.DEVICE_KIND_HOST}
_SOURCES = {
    SourceKind.NVML: pb.READING_SOURCE_NVML,
    SourceKind.HOST: pb.READING_SOURCE_HOST,
    SourceKind.REPLAY: pb.READING_SOURCE_REPLAY,
}


def to_requested_interval(request: pb.WatchReadingsRequest) -> float | None:
    """The interval asked for, in seconds; None when unset. A malformed Duration is INVALID_INTERVAL."""
    if not request.HasField("interval"):
        return None
    duration = request.interval
    # google.protobuf.Duration requires nanos within one second and of the same sign as seconds.
    same_sign = duration.seconds == 0 or duration.nanos == 0 or (duration.seconds > 0) == (duration.nanos > 0)
    if abs(duration.nanos) >= _NANOS_PER_SECOND or not same_sign:
        raise invalid_argument(
            "INVALID_INTERVAL",
            "interval is not a valid Duration: nanos must be within one second and of the same sign as seconds",
            seconds=duration.seconds,
            nanos=duration.nanos,
        )
    return duration.seconds + duration.nanos / _NANOS_PER_SECOND


def to_snapshot_response(snapshot: Snapshot) -> pb.GetSnapshotResponse:
    return pb.GetSnapshotResponse(
        node_name=snapshot.node_name,
        source=_SOURCES[snapshot.source],
        readings=[to_device_reading(reading) for reading in snapshot.readings],
    )


def to_watch_response(snapshot: Snapshot) -> pb.WatchReadingsResponse:
    return pb.WatchReadingsResponse(
        node_name=snapshot.node_name,
        source=_SOURCES[snapshot.source],
        readings=[to_device_reading(reading) for reading in snapshot.readings],
    )


def to_device_reading(reading: DeviceReading) -> pb.DeviceReading:
    device = reading.device
    message = pb.DeviceReading(
        device=pb.Device(
            device_id=device.device_id,
            kind=_KINDS[device.kind],
            index=device.index,
            name=device.name,
            uuid=device.uuid,
        ),
        memory_total_bytes=reading.memory_total_bytes,
        memory_used_bytes=reading.memory_used_bytes,
    )
    message.read_time.FromDatetime(reading.read_time)
    if reading.utilization_percent is not None:
        message.utilization_percent = reading.utilization_percent
    if reading.temperature_celsius is not None:
        message.temperature_celsius = reading.temperature_celsius
    if reading.power_watts is not None:
        message.power_watts = reading.power_watts
    return message
