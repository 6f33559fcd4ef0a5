"""Per-caller limits in the scheduler's state machine: requests and tokens per minute, requests at once,
and the priority ceiling, on an injected clock."""

from __future__ import annotations

import pytest

from orchestrator.scheduler.core.caller_limits import CallerBook
from orchestrator.scheduler.core.model import Ask, EndpointSpec, Grant, Queued, Release
from orchestrator.scheduler.core.scheduler import SlotScheduler
from services.shared.domain import Priority, SlotOutcome
from services.shared.errors import ErrorKind, MeshError
from services.shared.identity import CallerLimits
from tests.unit.test_scheduler_core import Clock


def scheduler(slots: int = 4) -> tuple[SlotScheduler, Clock]:
    clock = Clock()
    return SlotScheduler([EndpointSpec("e0", "m", "127.0.0.1:9000", slots)], 10, clock), clock


def ask(ticket: str, limits: CallerLimits | None, caller: str = "key:k1", priority: Priority = Priority.NORMAL) -> Ask:
    return Ask(ticket, "m", priority, caller, limits=limits)


def refusal(core: SlotScheduler, asked: Ask) -> MeshError:
    with pytest.raises(MeshError) as refused:
        core.submit(asked)
    return refused.value


def test_requests_past_the_per_minute_limit_are_refused_until_the_oldest_leaves_the_window() -> None:
    core, clock = scheduler()
    limits = CallerLimits(requests_per_minute=2)
    for ticket in ("a", "b"):
        grant, _ = core.submit(ask(ticket, limits))
        core.release(grant.slot_id, Release(SlotOutcome.SUCCEEDED))
        clock.now += 10
    refused = refusal(core, ask("c", limits))
    assert (refused.kind, refused.reason, refused.metadata["limit"]) == (
        ErrorKind.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        "requests",
    )
    assert refused.retry_after_seconds == pytest.approx(40.0)
    assert refused.metadata["x-ratelimit-limit-requests"] == "2"
    assert refused.metadata["x-ratelimit-remaining-requests"] == "0"
    assert refused.metadata["x-ratelimit-reset-requests"] == "40s"
    clock.now += 40
    assert isinstance(core.submit(ask("c", limits))[0], Grant)


def test_tokens_per_minute_count_what_finished_requests_used() -> None:
    core, clock = scheduler()
    limits = CallerLimits(tokens_per_minute=100)
    grant, _ = core.submit(ask("a", limits))
    core.release(grant.slot_id, Release(SlotOutcome.SUCCEEDED, tokens=100))
    refused = refusal(core, ask("b", limits))
    assert refused.metadata["limit"] == "tokens" and refused.metadata["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 60.5
    assert isinstance(core.submit(ask("b", limits))[0], Grant)


def test_limits_are_per_caller() -> None:
    core, _ = scheduler()
    limits = CallerLimits(requests_per_minute=1)
    core.submit(ask("a", limits, caller="key:k1"))
    assert isinstance(core.submit(ask("b", limits, caller="key:k2"))[0], Grant)
    assert refusal(core, ask("c", limits, caller="key:k1")).reason == "RATE_LIMITED"


def test_requests_at_once_count_waiting_and_running_and_free_up_on_every_way_out() -> None:
    core, _ = scheduler(slots=1)
    limits = CallerLimits(max_concurrent=2)
    running, _ = core.submit(ask("running", limits))
    waiting, _ = core.submit(ask("waiting", limits))
    assert isinstance(waiting, Queued)
    assert refusal(core, ask("third", limits)).metadata["limit"] == "concurrency"
    assert core.withdraw("waiting")
    assert isinstance(core.submit(ask("third", limits))[0], Queued)
    (granted,) = core.release(running.slot_id, Release(SlotOutcome.SUCCEEDED))
    assert granted.ticket_id == "third"
    assert isinstance(core.submit(ask("fourth", limits))[0], Queued)


def test_an_ask_above_the_ceiling_is_served_at_the_ceiling() -> None:
    core, _ = scheduler(slots=1)
    core.submit(ask("running", None, caller="other"))
    core.submit(ask("normal", None, caller="other", priority=Priority.NORMAL))
    capped = ask("capped", CallerLimits(max_priority=Priority.LOW), priority=Priority.CRITICAL)
    core.submit(capped)
    assert [queued.ticket_id for queued in core.positions()] == ["normal", "capped"], "served at LOW, not CRITICAL"


def test_asks_without_limits_are_never_limited() -> None:
    core, _ = scheduler(slots=100)
    for n in range(50):
        assert isinstance(core.submit(ask(str(n), None))[0], Grant)


def test_idle_callers_are_forgotten_once_their_windows_are_empty() -> None:
    book, limits = CallerBook(), CallerLimits(requests_per_minute=1)
    book.started("key:k1", 0.0)
    book.ended("key:k1", 10, 1.0)
    book.forget_idle(30.0)
    assert book.status("key:k1", limits, 30.0).remaining_requests == 0, "still inside the window"
    book.forget_idle(61.5)
    assert book.status("key:k1", limits, 61.5).remaining_requests == 1
