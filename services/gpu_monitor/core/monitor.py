"""The GPU monitor core: snapshots and paced watches over one DeviceReadingSource.

Sources block (NVML calls, file reads), so every read runs in a worker thread and the event loop stays
free for other callers. Before the source has started, and once the monitor is stopping, calls are
refused with UNAVAILABLE so a caller knows to retry or go elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from enum import Enum

from services.gpu_monitor.core.interval import resolve_interval
from services.gpu_monitor.core.readings import Snapshot
from services.gpu_monitor.core.sources import DeviceReadingSource, SourceReadError
from services.shared.errors import unavailable

# How long a caller should wait before retrying while the source starts.
_STARTING_RETRY_SECONDS = 1.0


class MonitorState(Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


class GpuMonitorCore:
    def __init__(self, node_name: str, default_interval_seconds: float) -> None:
        self._node_name = node_name
        self._default_interval_seconds = default_interval_seconds
        self._source: DeviceReadingSource | None = None
        self._state = MonitorState.STARTING
        self._stopping = asyncio.Event()

    @property
    def state(self) -> MonitorState:
        return self._state

    def mark_ready(self, source: DeviceReadingSource) -> None:
        self._source = source
        self._state = MonitorState.READY

    def mark_stopping(self) -> None:
        """Refuses new calls and ends open watches, so shutdown does not wait out the grace period."""
        self._state = MonitorState.STOPPING
        self._stopping.set()

    async def snapshot(self) -> Snapshot:
        source = self._require_ready()
        try:
            readings = await asyncio.to_thread(source.read)
        except SourceReadError as error:
            raise unavailable(
                "READINGS_UNAVAILABLE", f"the devices could not be read: {error}", self._default_interval_seconds
            ) from error
        return Snapshot(self._node_name, source.kind, readings)

    async def watch(self, requested_interval_seconds: float | None) -> AsyncIterator[Snapshot]:
        """A snapshot now, then one every interval, until the caller stops iterating or the monitor stops.

        The interval is validated before the first snapshot. Ticks are kept on a fixed schedule; when a
        read takes longer than the interval, missed ticks are skipped rather than sent in a burst.
        """
        interval = resolve_interval(requested_interval_seconds, self._default_interval_seconds)
        self._require_ready()
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        while True:
            yield await self.snapshot()
            next_due += interval
            now = loop.time()
            if next_due < now:
                next_due = now
            await self._sleep_unless_stopping(next_due - now)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        self._require_ready()

    def _require_ready(self) -> DeviceReadingSource:
        if self._state is MonitorState.STOPPING:
            raise unavailable("SHUTTING_DOWN", "this GPU monitor is shutting down")
        if self._source is None:
            raise unavailable("SOURCE_STARTING", "the reading source is still starting", _STARTING_RETRY_SECONDS)
        return self._source
