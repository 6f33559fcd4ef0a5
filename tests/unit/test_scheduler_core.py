import pytest

from orchestrator.scheduler.core.model import Ask, EndpointSpec, Grant, Queued, Recall
from orchestrator.scheduler.core.scheduler import SlotScheduler
from services.shared.domain import Priority
from services.shared.errors import ErrorKind, MeshError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(slots: int = 1, max_queue: int = 10, endpoints: int = 1) -> tuple[SlotScheduler, Clock]:
    clock = Clock()
    specs = [EndpointSpec(f"e{n}", "m", f"127.0.0.1:{9000 + n}", slots) for n in range(endpoints)]
    return SlotScheduler(specs, max_queue, clock), clock


def ask(ticket: str, priority: Priority = Priority.NORMAL, model: str = "m") -> Ask:
    return Ask(ticket, model, priority)


def test_a_free_slot_is_granted_at_once() -> None:
    core, _ = scheduler(slots=2)
    decision, shed = core.submit(ask("a"))
    assert isinstance(decision, Grant) and decision.endpoint.endpoint_id == "e0"
    assert decision.queue_wait_seconds == 0 and shed == []


def test_past_capacity_asks_wait_and_are_granted_by_priority_then_arrival() -> None:
    core, clock = scheduler(slots=1)
    held, _ = core.submit(ask("running"))
    for ticket, priority in [("low", Priority.LOW), ("normal1", Priority.NORMAL), ("high", Priority.HIGH),
                             ("normal2", Priority.NORMAL), ("critical", Priority.CRITICAL)]:  # fmt: skip
        decision, _ = core.submit(ask(ticket, priority))
        assert isinstance(decision, Queued)
    assert [q.ticket_id for q in core.positions()] == ["critical", "high", "normal1", "normal2", "low"]
    assert [q.position for q in core.positions()] == [0, 1, 2, 3, 4]
    order, slot = [], held.slot_id
    for _ in range(5):
        clock.now += 1.0
        (grant,) = core.release(slot)
        order.append(grant.ticket_id)
        slot = grant.slot_id
    assert order == ["critical", "high", "normal1", "normal2", "low"]


def test_a_grant_reports_its_queue_wait() -> None:
    core, clock = scheduler(slots=1)
    held, _ = core.submit(ask("a"))
    core.submit(ask("b"))
    clock.now += 2.5
    (grant,) = core.release(held.slot_id)
    assert grant.ticket_id == "b" and grant.queue_wait_seconds == pytest.approx(2.5)


def test_the_least_loaded_endpoint_is_chosen() -> None:
    core, _ = scheduler(slots=2, endpoints=2)
    first, _ = core.submit(ask("a"))
    second, _ = core.submit(ask("b"))
    assert {first.endpoint.endpoint_id, second.endpoint.endpoint_id} == {"e0", "e1"}


def test_a_full_queue_refuses_with_a_retry_delay() -> None:
    core, _ = scheduler(slots=1, max_queue=2)
    core.submit(ask("running"))
    core.submit(ask("q1"))
    core.submit(ask("q2"))
    with pytest.raises(MeshError) as refused:
        core.submit(ask("q3"))
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED and refused.value.reason == "QUEUE_FULL"
    assert refused.value.retry_after_seconds is not None and refused.value.retry_after_seconds >= 0.1


def test_a_more_urgent_ask_sheds_the_newest_least_urgent_one_from_a_full_queue() -> None:
    core, _ = scheduler(slots=1, max_queue=2)
    core.submit(ask("running"))
    core.submit(ask("low-old", Priority.LOW))
    core.submit(ask("low-new", Priority.LOW))
    decision, shed = core.submit(ask("high", Priority.HIGH))
    assert isinstance(decision, Queued) and decision.position == 0
    assert [s.ticket_id for s in shed] == ["low-new"]
    assert [q.ticket_id for q in core.positions()] == ["high", "low-old"]


def test_an_equally_urgent_ask_does_not_shed() -> None:
    core, _ = scheduler(slots=1, max_queue=1)
    core.submit(ask("running"))
    core.submit(ask("waiting", Priority.HIGH))
    with pytest.raises(MeshError):
        core.submit(ask("another", Priority.HIGH))


def test_a_withdrawn_ask_is_never_granted() -> None:
    core, _ = scheduler(slots=1)
    held, _ = core.submit(ask("a"))
    core.submit(ask("gone"))
    core.submit(ask("stays"))
    assert core.withdraw("gone") is True
    assert core.withdraw("gone") is False
    assert [g.ticket_id for g in core.release(held.slot_id)] == ["stays"]


def test_releasing_an_unknown_or_released_slot_changes_nothing() -> None:
    core, _ = scheduler(slots=1)
    held, _ = core.submit(ask("a"))
    core.release(held.slot_id)
    assert core.release(held.slot_id) == []
    assert core.snapshot().endpoints[0].used_slots == 0


def test_an_unknown_model_is_not_found() -> None:
    core, _ = scheduler()
    with pytest.raises(MeshError) as refused:
        core.submit(ask("a", model="nope"))
    assert refused.value.kind is ErrorKind.NOT_FOUND and refused.value.reason == "UNKNOWN_MODEL"


def test_a_down_endpoint_gets_no_work_and_its_return_drains_the_queue() -> None:
    core, _ = scheduler(slots=1, endpoints=2)
    core.set_available("e1", False)
    core.submit(ask("a"))
    decision, _ = core.submit(ask("b"))
    assert isinstance(decision, Queued)
    (grant,) = core.set_available("e1", True)
    assert grant.ticket_id == "b" and grant.endpoint.endpoint_id == "e1"


def test_no_endpoint_up_is_unavailable() -> None:
    core, _ = scheduler()
    core.set_available("e0", False)
    with pytest.raises(MeshError) as refused:
        core.submit(ask("a"))
    assert refused.value.kind is ErrorKind.UNAVAILABLE and refused.value.reason == "NO_ENDPOINT_AVAILABLE"


def test_retry_delay_follows_hold_times_and_queue_depth() -> None:
    core, clock = scheduler(slots=1)
    for n in range(20):
        held, _ = core.submit(ask(f"t{n}"))
        clock.now += 4.0
        core.release(held.slot_id)
    assert core.retry_after_seconds("m") == pytest.approx(4.0, rel=0.05)
    core.submit(ask("running"))
    core.submit(ask("waiting"))
    assert core.retry_after_seconds("m") == pytest.approx(8.0, rel=0.05)


def test_snapshot_counts_slots_and_queue() -> None:
    core, _ = scheduler(slots=1)
    core.submit(ask("a"))
    core.submit(ask("b", Priority.HIGH))
    snapshot = core.snapshot()
    assert snapshot.endpoints[0].used_slots == 1
    assert snapshot.queue_depth_by_priority[Priority.HIGH] == 1
    assert snapshot.queue_depth_by_priority[Priority.LOW] == 0


def yielding(slots: int = 2, endpoints: int = 1) -> SlotScheduler:
    specs = [EndpointSpec(f"e{n}", "m", f"127.0.0.1:{9000 + n}", slots) for n in range(endpoints)]
    return SlotScheduler(specs, 10, Clock(), background_yields=True)


def test_urgent_work_recalls_every_low_slot_on_its_device_once() -> None:
    core = yielding(slots=3)
    low = [core.submit(ask(f"low-{n}", Priority.LOW))[0] for n in range(2)]
    assert all(isinstance(grant, Grant) for grant in low)
    decision, others = core.submit(ask("urgent", Priority.NORMAL))
    assert isinstance(decision, Grant)
    assert others == [Recall(f"low-{n}", grant.slot_id) for n, grant in enumerate(low)]
    # Recalled already: the next urgent ask does not recall them again.
    assert core.submit(ask("urgent-2", Priority.HIGH))[1] == []


def test_low_work_waits_while_urgent_work_runs_or_waits_and_starts_once_it_is_done() -> None:
    core = yielding(slots=2)
    urgent = core.submit(ask("urgent", Priority.NORMAL))[0]
    assert isinstance(urgent, Grant)
    # A slot is free, but the device runs urgent work: background work waits.
    assert isinstance(core.submit(ask("low", Priority.LOW))[0], Queued)
    assert core.release(urgent.slot_id) == [Grant("low", "e0#2", core.snapshot().endpoints[0].spec, 0.0)]


def test_low_work_does_not_start_while_urgent_work_waits_for_the_device() -> None:
    core = yielding(slots=1)
    low = core.submit(ask("low", Priority.LOW))[0]
    assert isinstance(low, Grant)
    queued, recalls = core.submit(ask("urgent", Priority.NORMAL))
    assert isinstance(queued, Queued) and recalls == [Recall("low", low.slot_id)]
    assert isinstance(core.submit(ask("low-2", Priority.LOW))[0], Queued)
    granted = core.release(low.slot_id)
    assert [grant.ticket_id for grant in granted if isinstance(grant, Grant)] == ["urgent"]


def test_without_yielding_low_work_shares_the_device() -> None:
    core, _ = scheduler(slots=2)
    core.submit(ask("low", Priority.LOW))
    decision, others = core.submit(ask("urgent", Priority.NORMAL))
    assert isinstance(decision, Grant) and others == []
    assert isinstance(core.submit(ask("low-2", Priority.LOW))[0], Queued)


def test_low_work_leaves_an_endpoints_last_free_slot_to_urgent_work() -> None:
    core = yielding(slots=2)
    assert isinstance(core.submit(ask("low-1", Priority.LOW))[0], Grant)
    assert isinstance(core.submit(ask("low-2", Priority.LOW))[0], Queued)
    urgent, recalls = core.submit(ask("urgent", Priority.HIGH))
    assert isinstance(urgent, Grant) and [recall.ticket_id for recall in recalls] == ["low-1"]
    # An endpoint of one slot has none to keep.
    single = yielding(slots=1)
    assert isinstance(single.submit(ask("low", Priority.LOW))[0], Grant)
