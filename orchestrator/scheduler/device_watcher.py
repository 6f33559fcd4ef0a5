"""Keeps the latest readings of every device, streamed from the GPU monitor."""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import duration_pb2
from meshserve.gpumonitor.v1 import gpumonitor_pb2, gpumonitor_pb2_grpc

from orchestrator.scheduler.core.pressure import PressureLevel, PressureThresholds, level_for
from services.shared.channels import open_channel
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 0.5


class DeviceWatcher:
    def __init__(self, monitor_address: str, tls: TlsFiles | None, interval_seconds: float = 1.0) -> None:
        self._address = monitor_address
        self._tls = tls
        self._interval = duration_pb2.Duration()
        self._interval.FromNanoseconds(int(interval_seconds * 1e9))
        self.node_name = ""
        self.readings: dict[str, gpumonitor_pb2.DeviceReading] = {}
        self.levels: dict[str, PressureLevel] = {}
        self._thresholds = PressureThresholds()

    async def run(self) -> None:
        while True:
            try:
                async with open_channel(self._address, self._tls) as channel:
                    stub = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)
                    request = gpumonitor_pb2.WatchReadingsRequest(interval=self._interval)
                    async for update in stub.WatchReadings(request):
                        self.node_name = update.node_name
                        self.readings = {reading.device.device_id: reading for reading in update.readings}
                        self._follow_levels()
            except grpc.aio.AioRpcError as error:
                log.warning("GPU monitor at %s: %s", self._address, error.code().name)
            await asyncio.sleep(_RECONNECT_SECONDS)

    def _follow_levels(self) -> None:
        """Each device's pressure level, from its latest reading and its level before (for hysteresis)."""
        for device_id, reading in self.readings.items():
            total = reading.memory_total_bytes
            used = reading.memory_used_bytes / total if total else 1.0
            previous = self.levels.get(device_id, PressureLevel.LOW)
            level = level_for(used, previous, self._thresholds)
            if level is not previous:
                log.info("device %s is at pressure %s (%.0f%% used)", device_id, level.name, 100 * used)
            self.levels[device_id] = level
