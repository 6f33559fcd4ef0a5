"""Streams one node's device readings from its GPU monitor into the scheduler's ledger.

The monitor sends a reading every interval. One that says nothing for `silent_after_intervals` of them
(stopped, or its node cut off) is taken for gone: nothing new starts on its devices until it reads them
again. The channel is opened afresh after a silence, since a connection to a host that vanished can hang
rather than fail.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import duration_pb2
from meshserve.gpumonitor.v1 import gpumonitor_pb2, gpumonitor_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from services.shared.channels import open_channel
from services.shared.liveness import SILENT_AFTER_INTERVALS
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 0.5
DEFAULT_INTERVAL_SECONDS = 0.5


class DeviceWatcher:
    def __init__(
        self,
        broker: SlotBroker,
        monitor_address: str,
        tls: TlsFiles | None,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        silent_after_intervals: int = SILENT_AFTER_INTERVALS,
    ) -> None:
        self._broker = broker
        self.address = monitor_address
        self._tls = tls
        self._interval = duration_pb2.Duration()
        self._interval.FromNanoseconds(int(interval_seconds * 1e9))
        self._silence_seconds = interval_seconds * silent_after_intervals
        self.node_name = ""
        self.silent = True
        self.readings: dict[str, gpumonitor_pb2.DeviceReading] = {}

    async def run(self) -> None:
        while True:
            try:
                async with open_channel(self.address, self._tls, peer="gpu-monitor") as channel:
                    await self._follow(gpumonitor_pb2_grpc.GpuMonitorServiceStub(channel))
            except grpc.aio.AioRpcError as error:
                if not self.silent:
                    log.warning("GPU monitor at %s: %s", self.address, error.code().name)
            except TimeoutError:
                log.warning("GPU monitor at %s (%s) is silent", self.address, self.node_name or "node unknown")
            self.go_silent()
            await asyncio.sleep(_RECONNECT_SECONDS)

    def go_silent(self) -> None:
        """Its devices get no new work until the monitor reads them again."""
        if not self.silent:
            self.silent = True
            self._broker.devices_silent(list(self.readings))

    async def _follow(self, stub: gpumonitor_pb2_grpc.GpuMonitorServiceStub) -> None:
        call = stub.WatchReadings(gpumonitor_pb2.WatchReadingsRequest(interval=self._interval))
        try:
            while (update := await asyncio.wait_for(call.read(), self._silence_seconds)) is not grpc.aio.EOF:
                if self.silent:
                    log.info("GPU monitor at %s reads node %s", self.address, update.node_name)
                self.silent = False
                self.node_name = update.node_name
                self.readings = {reading.device.device_id: reading for reading in update.readings}
                for reading in update.readings:
                    self._observe(reading)
        finally:
            call.cancel()

    def _observe(self, reading: gpumonitor_pb2.DeviceReading) -> None:
        device_id = reading.device.device_id
        temperature = reading.temperature_celsius if reading.HasField("temperature_celsius") else None
        changed = self._broker.device_observed(
            device_id, reading.memory_used_bytes, reading.memory_total_bytes, temperature
        )
        if changed is not None:
            log.info("device %s is at pressure %s", device_id, changed.name)
