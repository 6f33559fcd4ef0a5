"""Aging, fairness between callers, and deadlines in the scheduler's queue, without asyncio or a server."""

import pytest

from orchestrator.scheduler.core.model import Ask, EndpointSpec, Expired, Grant
from orchestrator.scheduler.core.queue import PriorityQueue, Waiting
from orchestrator.scheduler.core.scheduler import SlotScheduler
from services.shared.domain import Priority


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask(ticket: str, priority: Priority = Priority.NORMAL, caller: str = "", deadline: float | None = None) -> Ask:
    return Ask(ticket, "m", priority, caller_id=caller, deadline=deadline)


def test_a_low_request_is_promoted_one_level_per_aging_interval_up_to_high() -> None:
    clock = Clock()
    queue = PriorityQueue(clock, aging_seconds=10)
    old_low = Waiting(ask("old-low", Priority.LOW), clock.now)
    queue.push(old_low)
    assert queue.effective_priority(old_low, clock.now + 9.9) is Priority.LOW
    assert queue.effective_priority(old_low, clock.now + 10) is Priority.NORMAL
    assert queue.effective_priority(old_low, clock.now + 25) is Priority.HIGH
    assert queue.effective_priority(old_low, clock.now + 1000) is Priority.HIGH  # never past HIGH


def test_an_aged_request_overtakes_newer_more_urgent_ones_but_never_critical() -> None:
    clock = Clock()
    queue = PriorityQueue(clock, aging_seconds=10)
    queue.push(Waiting(ask("low", Priority.LOW), clock.now))
    clock.now += 21  # the LOW ask is now HIGH
    queue.push(Waiting(ask("normal", Priority.NORMAL), clock.now))
    queue.push(Waiting(ask("high", Priority.HIGH), clock.now))
    queue.push(Waiting(ask("critical", Priority.CRITICAL), clock.now))
    assert [w.ask.ticket_id for w in queue.in_order()] == ["critical", "low", "high", "normal"]


def test_callers_take_turns_within_a_priority() -> None:
    clock = Clock()
    queue = PriorityQueue(clock)
    for n in range(3):
        queue.push(Waiting(ask(f"busy-{n}", caller="busy"), clock.now + n))
    queue.push(Waiting(ask("quiet-0", caller="quiet"), clock.now + 10))
    queue.push(Waiting(ask("urgent", Priority.HIGH, caller="busy"), clock.now + 11))
    order = [w.ask.ticket_id for w in queue.in_order()]
    assert order == ["urgent", "busy-0", "quiet-0", "busy-1", "busy-2"]


def test_expired_asks_are_dropped_and_never_granted() -> None:
    clock = Clock()
    core = SlotScheduler([EndpointSpec("e", "m", "a:1", 1)], max_queue=10, clock=clock)
    (held, _) = core.submit(ask("running"))
    core.submit(ask("impatient", deadline=clock.now + 1))
    core.submit(ask("patient", deadline=clock.now + 60))
    clock.now += 2
    updates = core.release(held.slot_id)
    assert updates[0] == Expired("impatient")
    assert [u.ticket_id for u in updates if isinstance(u, Grant)] == ["patient"]


def test_the_sweep_refuses_expired_asks_while_nothing_else_happens() -> None:
    clock = Clock()
    core = SlotScheduler([EndpointSpec("e", "m", "a:1", 1)], max_queue=10, clock=clock)
    core.submit(ask("running"))
    core.submit(ask("waiting", deadline=clock.now + 5))
    assert core.expire() == []
    clock.now += 5
    assert core.expire() == [Expired("waiting")]
    assert core.positions() == []


def test_aging_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityQueue(aging_seconds=0)
