"""The GPU monitor's Prometheus metrics: each device's latest readings, refreshed at the monitor's interval."""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from services.gpu_monitor.core.monitor import GpuMonitorCore
from services.gpu_monitor.core.readings import Snapshot
from services.shared.errors import MeshError

log = logging.getLogger(__name__)

_LABELS = ["device", "kind"]
MEMORY_TOTAL = Gauge("meshserve_device_memory_total_bytes", "Device memory in all", _LABELS)
MEMORY_USED = Gauge("meshserve_device_memory_used_bytes", "Device memory in use", _LABELS)
UTILIZATION = Gauge("meshserve_device_utilization_percent", "Compute utilisation, where reported", _LABELS)
TEMPERATURE = Gauge("meshserve_device_temperature_celsius", "Temperature, where reported", _LABELS)
POWER = Gauge("meshserve_device_power_watts", "Power draw, where reported", _LABELS)


def record(snapshot: Snapshot) -> None:
    for reading in snapshot.readings:
        labels = (reading.device.device_id, reading.device.kind.value)
        MEMORY_TOTAL.labels(*labels).set(reading.memory_total_bytes)
        MEMORY_USED.labels(*labels).set(reading.memory_used_bytes)
        for gauge, value in (
            (UTILIZATION, reading.utilization_percent),
            (TEMPERATURE, reading.temperature_celsius),
            (POWER, reading.power_watts),
        ):
            if value is not None:
                gauge.labels(*labels).set(value)


async def keep_recording(core: GpuMonitorCore) -> None:
    """Follows the monitor's own readings until it stops."""
    try:
        async for snapshot in core.watch(None):
            record(snapshot)
    except MeshError as stopped:
        log.info("device metrics stopped: %s", stopped)
