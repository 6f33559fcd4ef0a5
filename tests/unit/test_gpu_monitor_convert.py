"""Readings to protos (optional measurements stay unset when unknown) and the requested interval from a Duration."""

from __future__ import annotations

import datetime

import pytest
from google.protobuf import duration_pb2
from meshserve.gpumonitor.v1 import gpumonitor_pb2 as pb

from services.gpu_monitor.convert import to_device_reading, to_requested_interval, to_watch_response
from services.gpu_monitor.core.readings import Device, DeviceKind, DeviceReading, Snapshot, SourceKind
from services.shared.errors import MeshError

READ_TIME = datetime.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=datetime.UTC)


def test_a_gpu_reading_carries_every_measurement() -> None:
    device = Device("n/gpu1", DeviceKind.GPU, 1, "NVIDIA H100", "GPU-aaaa")
    message = to_device_reading(DeviceReading(device, 80, 10, READ_TIME, 40.0, 55.0, 123.5))
    assert message.device == pb.Device(
        device_id="n/gpu1", kind=pb.DEVICE_KIND_GPU, index=1, name="NVIDIA H100", uuid="GPU-aaaa"
    )
    assert (message.memory_total_bytes, message.memory_used_bytes) == (80, 10)
    assert (message.utilization_percent, message.temperature_celsius, message.power_watts) == (40.0, 55.0, 123.5)
    assert message.read_time.ToDatetime(tzinfo=datetime.UTC) == READ_TIME


def test_unknown_measurements_stay_unset() -> None:
    device = Device("n/host", DeviceKind.HOST, 0, "host memory")
    message = to_device_reading(DeviceReading(device, 100, 5, READ_TIME))
    assert message.device.kind == pb.DEVICE_KIND_HOST
    for name in ("utilization_percent", "temperature_celsius", "power_watts"):
        assert not message.HasField(name)


def test_a_watch_response_names_the_node_and_source() -> None:
    device = Device("n/host", DeviceKind.HOST, 0, "host memory")
    response = to_watch_response(Snapshot("n", SourceKind.HOST, (DeviceReading(device, 100, 5, READ_TIME),)))
    assert (response.node_name, response.source, len(response.readings)) == ("n", pb.READING_SOURCE_HOST, 1)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        (None, None),
        (duration_pb2.Duration(), 0.0),
        (duration_pb2.Duration(nanos=100_000_000), 0.1),
        (duration_pb2.Duration(seconds=2, nanos=500_000_000), 2.5),
        (duration_pb2.Duration(seconds=-1), -1.0),
    ],
)
def test_the_requested_interval_in_seconds(duration: duration_pb2.Duration | None, seconds: float | None) -> None:
    request = pb.WatchReadingsRequest(interval=duration) if duration is not None else pb.WatchReadingsRequest()
    assert to_requested_interval(request) == seconds


@pytest.mark.parametrize(
    "duration",
    [duration_pb2.Duration(seconds=1, nanos=-5), duration_pb2.Duration(nanos=1_000_000_000)],
)
def test_a_malformed_duration_is_an_invalid_interval(duration: duration_pb2.Duration) -> None:
    with pytest.raises(MeshError, match="INVALID_INTERVAL"):
        to_requested_interval(pb.WatchReadingsRequest(interval=duration))
