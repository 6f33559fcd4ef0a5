"""Device readings travel monitor → scheduler → gateway in three proto messages that share field names."""

from __future__ import annotations

from google.protobuf.message import Message

# Measurements a device may not report: they are copied only where the source has them, so absent stays absent.
OPTIONAL_READINGS = ("utilization_percent", "temperature_celsius", "power_watts")


def copy_optional_readings(source: Message, target: Message) -> None:
    for name in OPTIONAL_READINGS:
        if source.HasField(name):
            setattr(target, name, getattr(source, name))
