"""The scheduler following many GPU monitors: a monitor that falls silent, found by DNS or given by address.

The silence test runs a real grpc.aio monitor on a loopback port that stops sending while its stream stays
open, as a monitor on a node cut off by the network does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from meshserve.gpumonitor.v1 import gpumonitor_pb2 as gpb
from meshserve.gpumonitor.v1 import gpumonitor_pb2_grpc

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.scheduler import SlotScheduler
from orchestrator.scheduler.device_watcher import DeviceWatcher
from orchestrator.scheduler.monitors import MonitorDirectory, monitor_addresses, resolve_host
from services.shared.grpc_server import create_server
from tests.support import until

GIB = 1024**3


class MutableMonitor(gpumonitor_pb2_grpc.GpuMonitorServiceServicer):
    """Streams one node's reading every interval, except while muted, when it holds its streams open silently."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.speaking = asyncio.Event()
        self.speaking.set()
        self.watches = 0

    async def WatchReadings(
        self, request: gpb.WatchReadingsRequest, context: object
    ) -> AsyncIterator[gpb.WatchReadingsResponse]:
        self.watches += 1
        interval = request.interval.ToNanoseconds() / 1e9
        while True:
            await self.speaking.wait()
            device = gpb.Device(device_id=f"{self.node}/host", kind=gpb.DEVICE_KIND_HOST)
            reading = gpb.DeviceReading(device=device, memory_total_bytes=16 * GIB, memory_used_bytes=GIB)
            yield gpb.WatchReadingsResponse(node_name=self.node, readings=[reading])
            await asyncio.sleep(interval)  # the monitor's own pace


def silent_devices(broker: SlotBroker) -> dict[str, bool]:
    return {device.device_id: device.silent for device in broker.snapshot().devices if device.device_id}


async def test_a_monitor_that_falls_silent_has_its_devices_marked_and_is_heard_again_when_it_speaks() -> None:
    monitor = MutableMonitor("node-1")
    server = create_server()
    gpumonitor_pb2_grpc.add_GpuMonitorServiceServicer_to_server(monitor, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    broker = SlotBroker(SlotScheduler([], 10, models=["m"]))
    watcher = DeviceWatcher(broker, f"127.0.0.1:{port}", None, interval_seconds=0.1, silent_after_intervals=3)
    following = asyncio.create_task(watcher.run())
    try:
        await until(lambda: silent_devices(broker) == {"node-1/host": False}, "read")
        assert watcher.node_name == "node-1" and not watcher.silent
        monitor.speaking.clear()
        await until(lambda: silent_devices(broker) == {"node-1/host": True}, "silent")
        monitor.speaking.set()
        await until(lambda: silent_devices(broker) == {"node-1/host": False}, "heard again")
        # The silent stream was given up and a fresh one opened.
        assert monitor.watches >= 2
    finally:
        following.cancel()
        await server.stop(None)


async def fake_resolver(host: str, port: int) -> list[str]:
    return {"monitors.example": [f"10.0.0.1:{port}", f"10.0.0.2:{port}"]}.get(host, [])


async def test_dns_names_stand_for_every_address_they_resolve_to_and_plain_addresses_for_themselves() -> None:
    names = ["dns:monitors.example:50053", "10.0.0.9:50053", "dns:nowhere.example:50053"]
    assert await monitor_addresses(names, fake_resolver) == {"10.0.0.1:50053", "10.0.0.2:50053", "10.0.0.9:50053"}


async def test_the_loopback_name_resolves_to_an_address_and_an_unknown_one_to_none() -> None:
    assert "127.0.0.1:50053" in await resolve_host("localhost", 50053)
    assert await resolve_host("no-such-host.invalid", 50053) == []


class RecordingWatcher(DeviceWatcher):
    """A watcher that never connects: it records that it was started and let go."""

    started: list[str] = []
    silenced: list[str] = []

    async def run(self) -> None:
        RecordingWatcher.started.append(self.address)
        await asyncio.Event().wait()

    def go_silent(self) -> None:
        RecordingWatcher.silenced.append(self.address)


@pytest.fixture()
def recorded() -> type[RecordingWatcher]:
    RecordingWatcher.started, RecordingWatcher.silenced = [], []
    return RecordingWatcher


async def test_monitors_that_join_are_followed_and_those_that_leave_are_let_go(
    recorded: type[RecordingWatcher],
) -> None:
    resolved = {"monitors.example": ["10.0.0.1:50053", "10.0.0.2:50053"]}

    async def resolve(host: str, port: int) -> list[str]:
        return resolved.get(host, [])

    broker = SlotBroker(SlotScheduler([], 10))
    directory = MonitorDirectory(
        broker, ["dns:monitors.example:50053"], None, lambda address: recorded(broker, address, None), resolve
    )
    await directory.refresh()
    await until(lambda: len(recorded.started) == 2, "both followed")
    assert directory.addresses == ["10.0.0.1:50053", "10.0.0.2:50053"]
    resolved["monitors.example"] = ["10.0.0.2:50053", "10.0.0.3:50053"]
    await directory.refresh()
    assert directory.addresses == ["10.0.0.2:50053", "10.0.0.3:50053"]
    assert recorded.silenced == ["10.0.0.1:50053"]
    await until(lambda: sorted(recorded.started) == ["10.0.0.1:50053", "10.0.0.2:50053", "10.0.0.3:50053"], "joined")
    directory.stop()
