"""The GPU monitor's domain: devices, their readings, and where readings come from.

Plain data, shared by the sources, the monitor core and the servicer's proto conversion.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import Enum


class DeviceKind(Enum):
    GPU = "gpu"
    HOST = "host"


class SourceKind(Enum):
    """Where readings come from; REPLAY is for drills that play recorded readings back."""

    NVML = "nvml"
    HOST = "host"
    REPLAY = "replay"


@dataclass(frozen=True)
class Device:
    """One device of a node. device_id is unique in the mesh: "<node>/gpu<index>" or "<node>/host"."""

    device_id: str
    kind: DeviceKind
    index: int
    name: str
    uuid: str = ""


@dataclass(frozen=True)
class DeviceReading:
    """One set of measurements of one device. None means the device did not report that measurement."""

    device: Device
    memory_total_bytes: int
    memory_used_bytes: int
    read_time: datetime.datetime
    utilization_percent: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Every device of a node, read at one moment."""

    node_name: str
    source: SourceKind
    readings: tuple[DeviceReading, ...]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
