"""Follows every node's GPU monitor: those named by address, and those a DNS name resolves to.

`dns:NAME:PORT` stands for every address NAME resolves to, resolved again every few seconds, so that
nodes join and leave without a restart: on Kubernetes, the monitors' DaemonSet behind a headless Service.
A monitor whose address no longer resolves is let go, and its devices take no new work.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable

from meshserve.gpumonitor.v1 import gpumonitor_pb2

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.device_watcher import DeviceWatcher
from services.shared.tls import TlsFiles

log = logging.getLogger(__name__)

DNS_PREFIX = "dns:"
RESOLVE_SECONDS = 2.0

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as HOST:PORT; none when it does not resolve (now)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    addresses = dict.fromkeys(info[4][0] for info in infos)
    return [f"[{address}]:{port}" if ":" in address else f"{address}:{port}" for address in addresses]


async def monitor_addresses(names: Iterable[str], resolve: Resolver = resolve_host) -> set[str]:
    """The monitors `names` stand for now: plain addresses as they are, dns: names as they resolve."""
    addresses: set[str] = set()
    for name in names:
        if not name.startswith(DNS_PREFIX):
            addresses.add(name)
            continue
        host, _, port = name.removeprefix(DNS_PREFIX).rpartition(":")
        addresses.update(await resolve(host, int(port)))
    return addresses


class MonitorDirectory:
    def __init__(
        self,
        broker: SlotBroker,
        names: list[str],
        tls: TlsFiles | None,
        watcher: Callable[[str], DeviceWatcher] | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        self._broker = broker
        self._names = names
        self._new_watcher = watcher or (lambda address: DeviceWatcher(broker, address, tls))
        self._resolve = resolve
        self._watchers: dict[str, tuple[DeviceWatcher, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        while True:
            await self.refresh()
            if not any(name.startswith(DNS_PREFIX) for name in self._names):
                return
            await asyncio.sleep(RESOLVE_SECONDS)

    async def refresh(self) -> None:
        """Follows the monitors the names stand for now, and lets go of those they no longer do."""
        wanted = await monitor_addresses(self._names, self._resolve)
        for address in set(self._watchers) - wanted:
            watcher, task = self._watchers.pop(address)
            task.cancel()
            watcher.go_silent()
            log.info("GPU monitor at %s left (%s)", address, watcher.node_name or "node unknown")
        for address in sorted(wanted - set(self._watchers)):
            watcher = self._new_watcher(address)
            self._watchers[address] = (watcher, asyncio.get_running_loop().create_task(watcher.run()))

    def stop(self) -> None:
        for _, task in self._watchers.values():
            task.cancel()

    @property
    def addresses(self) -> list[str]:
        return sorted(self._watchers)

    def readings(self) -> dict[str, tuple[str, bool, gpumonitor_pb2.DeviceReading]]:
        """The latest reading of every device, with its node's name and whether its monitor is silent."""
        return {
            device_id: (watcher.node_name, watcher.silent, reading)
            for watcher, _ in self._watchers.values()
            for device_id, reading in watcher.readings.items()
        }
