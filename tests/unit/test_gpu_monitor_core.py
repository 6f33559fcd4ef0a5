"""The monitor core without a server: interval rules, snapshots, paced watches, start and stop."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from contextlib import aclosing

import pytest

from services.gpu_monitor.core.interval import resolve_interval
from services.gpu_monitor.core.monitor import GpuMonitorCore
from services.gpu_monitor.core.readings import Device, DeviceKind, DeviceReading, SourceKind, utc_now
from services.gpu_monitor.core.sources import SourceReadError
from services.shared.errors import ErrorKind, MeshError
from tests.support import REPO_ROOT


class CountingSource:
    """One HOST device whose used memory counts the reads; it can be told to fail or to block."""

    def __init__(self) -> None:
        self.reads = 0
        self.failure: str | None = None
        self.read_delay_seconds = 0.0
        self.reading_threads: set[int] = set()

    @property
    def kind(self) -> SourceKind:
        return SourceKind.HOST

    def start(self) -> None:
        pass

    def read(self) -> tuple[DeviceReading, ...]:
        self.reading_threads.add(threading.get_ident())
        time.sleep(self.read_delay_seconds)
        if self.failure is not None:
            raise SourceReadError(self.failure)
        self.reads += 1
        device = Device("n/host", DeviceKind.HOST, 0, "host memory")
        return (DeviceReading(device, 1000, self.reads, utc_now()),)

    def close(self) -> None:
        pass


def ready_core(source: CountingSource, default_interval: float = 1.0) -> GpuMonitorCore:
    core = GpuMonitorCore("n", default_interval)
    core.mark_ready(source)
    return core


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, 1.0), (0.0, 0.05), (0.01, 0.05), (0.25, 0.25), (60.0, 60.0), (61.0, 60.0), (3600.0, 60.0)],
)
def test_intervals_are_clamped_to_the_served_range(requested: float | None, expected: float) -> None:
    assert resolve_interval(requested, default_seconds=1.0) == expected


@pytest.mark.parametrize("requested", [-0.001, -5.0, 3600.5, 86400.0, math.nan, math.inf])
def test_negative_or_longer_than_an_hour_intervals_are_invalid(requested: float) -> None:
    with pytest.raises(MeshError) as refused:
        resolve_interval(requested, default_seconds=1.0)
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
    assert refused.value.reason == "INVALID_INTERVAL"


async def test_a_snapshot_reads_in_a_worker_thread() -> None:
    source = CountingSource()
    snapshot = await ready_core(source).snapshot()
    assert (snapshot.node_name, snapshot.source) == ("n", SourceKind.HOST)
    assert [reading.memory_used_bytes for reading in snapshot.readings] == [1]
    assert threading.get_ident() not in source.reading_threads


async def test_a_slow_read_does_not_block_the_event_loop() -> None:
    source = CountingSource()
    source.read_delay_seconds = 0.3
    core = ready_core(source)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await core.snapshot()
    ticker.cancel()
    assert ticks >= 10


async def test_a_watch_sends_at_once_then_every_interval() -> None:
    core = ready_core(CountingSource())
    started = time.monotonic()
    arrivals = []
    async with aclosing(core.watch(0.1)) as snapshots:
        async for _ in snapshots:
            arrivals.append(time.monotonic() - started)
            if len(arrivals) == 4:
                break
    assert arrivals[0] < 0.05
    assert 0.28 <= arrivals[-1] < 1.5


async def test_a_watch_without_an_interval_uses_the_default() -> None:
    core = ready_core(CountingSource(), default_interval=0.2)
    started = time.monotonic()
    async with aclosing(core.watch(None)) as snapshots:
        await anext(snapshots)
        await anext(snapshots)
    assert 0.18 <= time.monotonic() - started < 1.5


async def test_an_invalid_interval_is_refused_before_any_reading() -> None:
    source = CountingSource()
    with pytest.raises(MeshError, match="INVALID_INTERVAL"):
        await anext(ready_core(source).watch(-1.0))
    assert source.reads == 0


async def test_calls_before_the_source_starts_are_unavailable_with_a_retry_delay() -> None:
    core = GpuMonitorCore("n", 1.0)
    with pytest.raises(MeshError) as refused:
        await core.snapshot()
    assert refused.value.kind is ErrorKind.UNAVAILABLE
    assert refused.value.reason == "SOURCE_STARTING"
    assert refused.value.retry_after_seconds is not None


async def test_a_failed_read_is_unavailable() -> None:
    source = CountingSource()
    source.failure = "NVML could not count GPUs: GPU is lost"
    with pytest.raises(MeshError) as refused:
        await ready_core(source).snapshot()
    assert refused.value.kind is ErrorKind.UNAVAILABLE
    assert refused.value.reason == "READINGS_UNAVAILABLE"
    assert "GPU is lost" in refused.value.message


async def test_stopping_ends_an_open_watch_at_once() -> None:
    core = ready_core(CountingSource())
    snapshots = core.watch(30.0)
    await anext(snapshots)
    waiting = asyncio.create_task(anext(snapshots))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    core.mark_stopping()
    with pytest.raises(MeshError) as refused:
        await waiting
    assert refused.value.reason == "SHUTTING_DOWN"
    assert time.monotonic() - started < 1.0
    await snapshots.aclose()


def test_the_core_never_imports_grpc() -> None:
    modules = ["host_source", "interval", "monitor", "nvml_source", "readings", "sources"]
    imports = "; ".join(f"import services.gpu_monitor.core.{module}" for module in modules)
    check = f"import sys; {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"
