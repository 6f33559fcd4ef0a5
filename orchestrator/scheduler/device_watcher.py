"""Streams the node's device readings from the GPU monitor into the scheduler's ledger."""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import duration_pb2
from meshserve.gpumonitor.v1 import gpumonitor_pb2, gpumonitor_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from services.shared.channels import open_channel
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 0.5


class DeviceWatcher:
    def __init__(
        self, broker: SlotBroker, monitor_address: str, tls: TlsFiles | None, interval_seconds: float = 1.0
    ) -> None:
        self._broker = broker
        self._address = monitor_address
        self._tls = tls
        self._interval = duration_pb2.Duration()
        self._interval.FromNanoseconds(int(interval_seconds * 1e9))
        self.node_name = ""
        self.readings: dict[str, gpumonitor_pb2.DeviceReading] = {}

    async def run(self) -> None:
        while True:
            try:
                async with open_channel(self._address, self._tls) as channel:
                    stub = gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel)
                    request = gpumonitor_pb2.WatchReadingsRequest(interval=self._interval)
                    async for update in stub.WatchReadings(request):
                        self.node_name = update.node_name
                        self.readings = {reading.device.device_id: reading for reading in update.readings}
                        for reading in update.readings:
                            self._observe(reading)
            except grpc.aio.AioRpcError as error:
                log.warning("GPU monitor at %s: %s", self._address, error.code().name)
            await asyncio.sleep(_RECONNECT_SECONDS)

    def _observe(self, reading: gpumonitor_pb2.DeviceReading) -> None:
        device_id = reading.device.device_id
        temperature = reading.temperature_celsius if reading.HasField("temperature_celsius") else None
        changed = self._broker.device_observed(
            device_id, reading.memory_used_bytes, reading.memory_total_bytes, temperature
        )
        if changed is not None:
            log.info("device %s is at pressure %s", device_id, changed.name)
