"""The scheduler's async shell over the real state machine: what each waiting caller hears, and when."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import (
    Ask,
    EndpointSpec,
    Footprint,
    Grant,
    Lost,
    Queued,
    Recall,
    Release,
    Unload,
)
from orchestrator.scheduler.core.scheduler import SlotScheduler
from services.shared.domain import Priority, SlotOutcome
from services.shared.errors import ErrorKind, MeshError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def broker(slots: int = 1, max_queue: int = 10) -> tuple[SlotBroker, Clock]:
    clock = Clock()
    spec = EndpointSpec("e0", "m", "127.0.0.1:9000", slots)
    return SlotBroker(SlotScheduler([spec], max_queue, clock)), clock


def ask(ticket: str, priority: Priority = Priority.NORMAL, deadline: float | None = None) -> Ask:
    return Ask(ticket, "m", priority, deadline=deadline)


async def granted(updates: AsyncIterator[Queued | Grant]) -> Grant:
    async for update in updates:
        if isinstance(update, Grant):
            return update
    raise AssertionError("the stream ended without a grant")


def used_slots(slot_broker: SlotBroker) -> int:
    return sum(endpoint.used_slots for endpoint in slot_broker.snapshot().endpoints)


def queued(slot_broker: SlotBroker) -> int:
    return sum(slot_broker.snapshot().queue_depth_by_priority.values())


async def test_a_free_slot_is_granted_without_queueing() -> None:
    slot_broker, _ = broker()
    updates = slot_broker.acquire(ask("a"))
    first = await anext(updates)
    assert isinstance(first, Grant) and first.endpoint.endpoint_id == "e0"
    with pytest.raises(StopAsyncIteration):
        await anext(updates)


async def test_a_waiting_caller_hears_its_position_then_its_grant() -> None:
    slot_broker, _ = broker()
    held = await granted(slot_broker.acquire(ask("running")))
    waiting = slot_broker.acquire(ask("waiting"))
    assert await anext(waiting) == Queued("waiting", 0, 1), "nobody is ahead of it"
    slot_broker.release(held.slot_id, Release(SlotOutcome.SUCCEEDED, 0.1))
    grant = await anext(waiting)
    assert isinstance(grant, Grant) and grant.ticket_id == "waiting"
    assert used_slots(slot_broker) == 1


async def test_positions_are_announced_as_the_queue_moves() -> None:
    slot_broker, _ = broker()
    held = await granted(slot_broker.acquire(ask("running")))
    first, second = slot_broker.acquire(ask("first")), slot_broker.acquire(ask("second"))
    assert (await anext(first)).position == 0
    assert (await anext(second)).position == 1
    urgent = slot_broker.acquire(ask("urgent", Priority.HIGH))
    assert (await anext(urgent)).position == 0
    assert await anext(first) == Queued("first", 1, 3), "an urgent ask moved it back"
    assert await anext(second) == Queued("second", 2, 3)
    slot_broker.release(held.slot_id)
    assert isinstance(await anext(urgent), Grant)
    assert await anext(first) == Queued("first", 0, 2)
    assert await anext(second) == Queued("second", 1, 2)


async def test_a_grant_waiting_unread_when_its_caller_leaves_is_given_to_the_next() -> None:
    slot_broker, _ = broker()
    held = await granted(slot_broker.acquire(ask("running")))
    leaving, patient = slot_broker.acquire(ask("leaving")), slot_broker.acquire(ask("patient"))
    await anext(leaving)
    await anext(patient)
    slot_broker.release(held.slot_id)  # the grant goes into leaving's mailbox, unread
    await leaving.aclose()
    update = await anext(patient)
    while isinstance(update, Queued):
        update = await anext(patient)
    assert isinstance(update, Grant) and update.ticket_id == "patient"
    assert used_slots(slot_broker) == 1, "the abandoned grant was given back, not leaked"


async def test_a_caller_that_leaves_the_queue_is_withdrawn() -> None:
    slot_broker, _ = broker()
    await granted(slot_broker.acquire(ask("running")))
    leaving = slot_broker.acquire(ask("leaving"))
    await anext(leaving)
    assert queued(slot_broker) == 1
    await leaving.aclose()
    assert queued(slot_broker) == 0


async def test_a_shed_ask_is_refused_with_a_retry_delay() -> None:
    slot_broker, _ = broker(max_queue=1)
    await granted(slot_broker.acquire(ask("running")))
    low = slot_broker.acquire(ask("low", Priority.LOW))
    await anext(low)
    high = slot_broker.acquire(ask("high", Priority.HIGH))
    assert await anext(high) == Queued("high", 0, 1)
    with pytest.raises(MeshError) as shed:
        await anext(low)
    assert (shed.value.kind, shed.value.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "SHED")
    assert shed.value.retry_after_seconds is not None and shed.value.retry_after_seconds > 0


async def test_an_ask_whose_deadline_passes_in_the_queue_is_told_so_at_the_next_tick() -> None:
    slot_broker, clock = broker()
    await granted(slot_broker.acquire(ask("running")))
    waiting = slot_broker.acquire(ask("waiting", deadline=clock.now + 5))
    await anext(waiting)
    slot_broker.tick()
    clock.now += 6
    slot_broker.tick()
    with pytest.raises(MeshError) as expired:
        await anext(waiting)
    assert (expired.value.kind, expired.value.reason) == (ErrorKind.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED_IN_QUEUE")
    assert queued(slot_broker) == 0


async def test_a_full_queue_refuses_at_once() -> None:
    slot_broker, _ = broker(max_queue=1)
    await granted(slot_broker.acquire(ask("running")))
    await anext(slot_broker.acquire(ask("waiting")))
    with pytest.raises(MeshError) as refused:
        await anext(slot_broker.acquire(ask("one too many")))
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED


async def test_an_endpoint_that_stops_serving_takes_no_asks_and_one_that_returns_grants() -> None:
    slot_broker, _ = broker()
    slot_broker.endpoint_serving("e0", False)
    with pytest.raises(MeshError) as refused:
        await anext(slot_broker.acquire(ask("a")))
    assert refused.value.reason == "NO_ENDPOINT_AVAILABLE"
    slot_broker.endpoint_serving("e0", True)
    assert isinstance(await anext(slot_broker.acquire(ask("b"))), Grant)


async def test_a_device_reading_reports_a_change_of_pressure_level_once() -> None:
    slot_broker, _ = broker()
    gib = 1 << 30
    first = slot_broker.device_observed("host", 1 * gib, 10 * gib, None)
    assert first is not None and first.name == "LOW"
    assert slot_broker.device_observed("host", 1 * gib, 10 * gib, None) is None
    higher = slot_broker.device_observed("host", 99 * gib // 10, 10 * gib, None)
    assert higher is not None and higher.name == "EMERGENCY"


async def test_an_unload_goes_to_the_keeper_and_its_end_is_taken_back() -> None:
    clock = Clock()
    spec = EndpointSpec("e0", "m", "127.0.0.1:9000", 1, keep_alive_seconds=10)
    slot_broker = SlotBroker(SlotScheduler([spec], 4, clock))
    unloads: list[Unload] = []
    slot_broker.send_unloads_to(unloads.append)
    slot_broker.endpoint_described("e0", Footprint(1000, 10), resident=True)
    clock.now += 11
    slot_broker.tick()
    assert [unload.endpoint_id for unload in unloads] == ["e0"]
    slot_broker.model_unloaded("e0")
    assert slot_broker.snapshot().endpoints[0].resident is False


async def test_the_tick_loop_runs_until_cancelled() -> None:
    slot_broker, clock = broker()
    await granted(slot_broker.acquire(ask("running")))
    waiting = slot_broker.acquire(ask("waiting", deadline=clock.now + 1))
    await anext(waiting)
    clock.now += 2
    ticking = asyncio.create_task(slot_broker.tick_forever())
    try:
        with pytest.raises(MeshError) as expired:
            await asyncio.wait_for(anext(waiting), timeout=30)
        assert expired.value.reason == "DEADLINE_EXCEEDED_IN_QUEUE"
    finally:
        ticking.cancel()


async def test_a_recalled_slot_has_the_news_posted_and_a_release_forgets_it() -> None:
    spec = EndpointSpec("e0", "m", "127.0.0.1:9000", 2)
    slot_broker = SlotBroker(SlotScheduler([spec], 10, Clock(), background_yields=True))
    low = await granted(slot_broker.acquire(ask("low", Priority.LOW)))
    news = slot_broker.slot_news(low.slot_id)
    assert news.empty()
    urgent = await granted(slot_broker.acquire(ask("urgent")))
    assert news.get_nowait() == Recall("low", low.slot_id)
    slot_broker.release(low.slot_id)
    assert slot_broker.slot_news(low.slot_id) is not news
    assert slot_broker.slot_news(urgent.slot_id).empty()


async def test_an_endpoint_that_leaves_posts_the_loss_to_each_slot_held_on_it() -> None:
    slot_broker = SlotBroker(SlotScheduler([], 10, Clock(), models=["m"]))
    spec = EndpointSpec("m@node-1:1", "m", "node-1:1", 2, node_name="node-1")
    slot_broker.endpoint_joined(spec, running_requests=1)
    slot_broker.endpoint_serving(spec.endpoint_id, True)
    held = await granted(slot_broker.acquire(ask("held")))
    assert slot_broker.snapshot().endpoints[0].used_slots == 2
    slot_broker.endpoint_left(spec.endpoint_id, "node-1 is silent")
    assert slot_broker.slot_news(held.slot_id).get_nowait() == Lost("held", held.slot_id, "node-1 is silent")
    assert slot_broker.snapshot().endpoints == ()
