"""The monitor core without a server: interval rules, snapshots, paced watches, start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from contextlib import aclosing

import pytest

from services.gpu_monitor.core.interval import resolve_interval
from services.gpu_monitor.core.monitor import GpuMonitorCore
from services.gpu_monitor.core.readings import Device, DeviceKind, DeviceReading, SourceKind, utc_now
from services.gpu_monitor.core.sources import SourceReadError
from services.shared.errors import ErrorKind, MeshError


class CountingSource:
    """One HOST device whose used memory counts the reads; it can be told to fail, or to block until let go."""

    def __init__(self) -> None:
        self.reads = 0
        self.failure: str | None = None
        self.reading_threads: set[int] = set()
        # When set, a read waits for `let_go` (at most 10 s, then it fails) after saying it began.
        self.blocking = False
        self.read_began = threading.Event()
        self.let_go = threading.Event()

    @property
    def kind(self) -> SourceKind:
        return SourceKind.HOST

    def start(self) -> None:
        pass

    def read(self) -> tuple[DeviceReading, ...]:
        self.reading_threads.add(threading.get_ident())
        self.read_began.set()
        if self.blocking and not self.let_go.wait(timeout=10):
            raise SourceReadError("the read was never let go")
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
    source.blocking = True
    snapshotting = asyncio.create_task(ready_core(source).snapshot())
    await asyncio.to_thread(source.read_began.wait, 10)
    # Only the event loop lets the read go: had the read blocked the loop, it would never be let go and
    # would fail after its 10 s.
    source.let_go.set()
    snapshot = await snapshotting
    assert [reading.memory_used_bytes for reading in snapshot.readings] == [1]


async def test_a_watch_sends_at_once() -> None:
    core = ready_core(CountingSource())
    async with aclosing(core.watch(30.0)) as snapshots:
        # Far sooner than the 30 s interval, even on a busy machine.
        first = await asyncio.wait_for(anext(snapshots), timeout=5)
    assert [reading.memory_used_bytes for reading in first.readings] == [1]


async def test_a_watch_sends_a_fresh_reading_each_interval_and_never_early() -> None:
    core = ready_core(CountingSource())
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent: list[tuple[float, int]] = []
    async with aclosing(core.watch(0.1)) as snapshots:
        async for snapshot in snapshots:
            sent.append((loop.time() - started, snapshot.readings[0].memory_used_bytes))
            if len(sent) == 4:
                break
    assert [reads for _, reads in sent] == [1, 2, 3, 4]
    # The schedule may run late on a busy machine, never early: the nth tick waits n intervals.
    assert all(at >= 0.1 * tick - 0.01 for tick, (at, _) in enumerate(sent)), sent


async def sent_during(
    core: GpuMonitorCore, interval: float | None, slow_interval: float, slow_sends: int
) -> tuple[int, float]:
    """How many snapshots a watch at `interval` sent while another at `slow_interval` sent `slow_sends`, and
    over how long a span of loop time.

    Both run on one loop, so a busy machine delays them alike and the count stays a ratio of intervals.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0

    async def count() -> None:
        nonlocal sent
        async with aclosing(core.watch(interval)) as snapshots:
            async for _ in snapshots:
                sent += 1

    counting = asyncio.create_task(count())
    async with aclosing(core.watch(slow_interval)) as slow:
        for _ in range(slow_sends):
            await anext(slow)
    during, span = sent, loop.time() - started
    counting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await counting
    return during, span


def at_most_one_per_interval(sent: int, span: float, interval: float) -> bool:
    """The first snapshot goes at once and each later one waits its interval, so this many fit in the span."""
    return sent <= span / interval + 1 + 1e-6


async def test_a_shorter_interval_sends_proportionally_more_often() -> None:
    sent, span = await sent_during(ready_core(CountingSource()), 0.05, slow_interval=0.25, slow_sends=3)
    # 0.5 s at 0.05 s is eleven snapshots; a watch at the slow one's pace would send three.
    assert sent >= 6 and at_most_one_per_interval(sent, span, 0.05), (sent, span)


async def test_a_watch_without_an_interval_uses_the_default() -> None:
    core = ready_core(CountingSource(), default_interval=0.2)
    sent, span = await sent_during(core, None, slow_interval=1.0, slow_sends=2)
    # 1 s at the 0.2 s default is six snapshots: not the two of a 1 s interval, nor the 21 of the 0.05 s floor.
    assert sent >= 4 and at_most_one_per_interval(sent, span, 0.2), (sent, span)


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
    # One pass of the loop takes the watch into its wait for the next tick, 30 s away.
    await asyncio.sleep(0)
    assert not waiting.done()
    core.mark_stopping()
    with pytest.raises(MeshError) as refused:
        # Far sooner than the 30 s tick it was waiting for, even on a busy machine.
        await asyncio.wait_for(waiting, timeout=5)
    assert refused.value.reason == "SHUTTING_DOWN"
    await snapshots.aclose()
