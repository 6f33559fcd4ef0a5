"""The scheduler core under memory pressure and heat: who starts, where, and what waits. No asyncio, no server."""

import random

import pytest

from orchestrator.scheduler.core.devices import PressurePolicy
from orchestrator.scheduler.core.model import Ask, EndpointSpec, Footprint, Grant, Queued, Release
from orchestrator.scheduler.core.pressure import PressureLevel
from orchestrator.scheduler.core.scheduler import SlotScheduler
from services.shared.domain import Priority, SlotOutcome
from services.shared.errors import ErrorKind, MeshError

GIB = 1024**3
DEVICE = "node/gpu0"
TOTAL = 100 * GIB


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def mesh(
    *specs: EndpointSpec, budget: int | None = None, max_queue: int = 20, footprints: dict | None = None
) -> tuple[SlotScheduler, Clock]:
    clock = Clock()
    core = SlotScheduler(list(specs), max_queue, clock, pressure=PressurePolicy(budget_bytes=budget))
    for spec in specs:
        core.describe(spec.endpoint_id, (footprints or {}).get(spec.endpoint_id, Footprint(GIB, GIB // 4)), True)
    return core, clock


def spec(endpoint_id: str, model: str, slots: int = 4, keep_alive: float | None = None) -> EndpointSpec:
    return EndpointSpec(endpoint_id, model, f"127.0.0.1:{hash(endpoint_id) % 1000 + 9000}", slots, "", keep_alive)


def at(core: SlotScheduler, used_fraction: float, celsius: float | None = None) -> list:
    return core.observe(DEVICE, int(used_fraction * TOTAL), TOTAL, celsius)


def submit(core: SlotScheduler, ticket: str, model: str = "big", priority: Priority = Priority.NORMAL, **extra):
    decision, _ = core.submit(Ask(ticket, model, priority, **extra))
    return decision


def granted(updates: list) -> list[str]:
    return [update.ticket_id for update in updates if isinstance(update, Grant)]


def level(core: SlotScheduler) -> PressureLevel:
    return PressureLevel(core.snapshot().devices[0].level)


def two_models() -> tuple[SlotScheduler, Clock]:
    footprints = {"b": Footprint(4 * GIB, GIB), "s": Footprint(GIB, GIB // 4)}
    return mesh(spec("b", "big"), spec("s", "small"), footprints=footprints)


def test_at_critical_only_high_and_critical_work_starts_and_only_on_the_smallest_model() -> None:
    core, _ = two_models()
    at(core, 0.90)
    assert level(core) is PressureLevel.CRITICAL
    assert isinstance(submit(core, "normal-small", "small", Priority.NORMAL), Queued)
    assert isinstance(submit(core, "high-big", "big", Priority.HIGH), Queued)
    assert isinstance(submit(core, "high-small", "small", Priority.HIGH), Grant)
    # Concurrency 1 per engine at CRITICAL: even CRITICAL work waits for the running one.
    assert isinstance(submit(core, "critical-small", "small", Priority.CRITICAL), Queued)


def test_at_high_low_priority_waits_and_each_engine_runs_at_most_two() -> None:
    core, _ = two_models()
    at(core, 0.75)
    assert isinstance(submit(core, "low", "small", Priority.LOW), Queued)
    assert [type(submit(core, f"n{i}", "small")) for i in range(3)] == [Grant, Grant, Queued]


def test_at_normal_concurrency_is_reduced_and_at_low_it_is_full() -> None:
    core, _ = two_models()
    at(core, 0.55)
    assert [type(submit(core, f"n{i}", "small")) for i in range(4)] == [Grant, Grant, Grant, Queued]
    at(core, 0.10)
    assert level(core) is PressureLevel.LOW


def test_at_emergency_new_work_is_refused_with_a_delay_and_queued_work_is_kept() -> None:
    core, _ = two_models()
    at(core, 0.90)
    running = submit(core, "high", "small", Priority.HIGH)
    assert isinstance(submit(core, "waiting", "small", Priority.NORMAL), Queued)
    at(core, 0.97)
    with pytest.raises(MeshError) as refused:
        submit(core, "new", "small", Priority.CRITICAL)
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED and refused.value.reason == "MEMORY_PRESSURE_EMERGENCY"
    assert refused.value.retry_after_seconds > 0
    assert granted(core.release(running.slot_id)) == []  # nothing starts while the device is in EMERGENCY
    assert [queued.ticket_id for queued in core.positions()] == ["waiting"]
    assert granted(at(core, 0.30)) == ["waiting"]


def test_when_pressure_falls_queued_work_drains_in_priority_order() -> None:
    core, _ = mesh(spec("s", "small", slots=1))
    at(core, 0.90)
    running = submit(core, "first", "small", Priority.HIGH)
    for ticket, priority in [("low", Priority.LOW), ("normal", Priority.NORMAL), ("high", Priority.HIGH)]:
        assert isinstance(submit(core, ticket, "small", priority), Queued)
    at(core, 0.10)
    order = []
    for _ in range(3):
        (running,) = [u for u in core.release(running.slot_id) if isinstance(u, Grant)]
        order.append(running.ticket_id)
    assert order == ["high", "normal", "low"]


def test_temperature_reduces_then_pauses_then_stops_admission() -> None:
    core, _ = mesh(spec("s", "small", slots=4))
    at(core, 0.10, celsius=70)
    decisions = [submit(core, f"r{i}", "small") for i in range(3)]
    assert [type(decision) for decision in decisions] == [Grant, Grant, Queued]
    running = decisions[:2]
    at(core, 0.10, celsius=82)
    for grant in running:
        assert granted(core.release(grant.slot_id)) == []  # paused: the queue keeps its work
    at(core, 0.10, celsius=86)
    with pytest.raises(MeshError):
        submit(core, "refused", "small")
    assert granted(at(core, 0.10, celsius=50)) == ["r2"]


def test_no_grant_ever_takes_the_ledger_past_its_capacity() -> None:
    footprint = Footprint(2 * GIB, GIB)
    specs = (spec("a", "m", slots=8), spec("b", "m", slots=8))
    core, _ = mesh(*specs, budget=8 * GIB, max_queue=100, footprints={"a": footprint, "b": footprint})
    rng = random.Random(7)
    running, peak = [], 0
    for step in range(400):
        if running and rng.random() < 0.4:
            updates = core.release(running.pop(rng.randrange(len(running))))
        else:
            decision, updates = core.submit(Ask(f"t{step}", "m", rng.choice(list(Priority))))
            updates = [decision, *updates]
        running += [update.slot_id for update in updates if isinstance(update, Grant)]
        device = core.snapshot().devices[0]
        assert device.reserved_bytes <= device.capacity_bytes == 8 * GIB
        peak = max(peak, device.reserved_bytes)
    assert core.snapshot().devices[0].peak_reserved_bytes == peak > 4 * GIB


def test_a_request_goes_to_the_least_loaded_endpoint_of_its_model() -> None:
    core, _ = mesh(spec("a", "m", slots=2), spec("b", "m", slots=2))
    endpoints = [submit(core, f"t{i}", "m").endpoint.endpoint_id for i in range(4)]
    assert sorted(endpoints) == ["a", "a", "b", "b"] and endpoints[0] != endpoints[1]


def test_fallback_models_serve_only_under_high_or_critical_pressure_when_the_model_does_not_fit() -> None:
    core, _ = two_models()
    assert submit(core, "calm", "big", fallback_models=("small",)).endpoint.model == "big"
    at(core, 0.90)
    assert submit(core, "pressed", "big", Priority.HIGH, fallback_models=("small",)).endpoint.model == "small"
    assert isinstance(submit(core, "no-fallback", "big", Priority.HIGH), Queued)


def test_an_out_of_memory_error_forces_emergency_then_recovers_without_losing_queued_work() -> None:
    core, clock = mesh(spec("s", "small", slots=1), budget=50 * GIB)
    at(core, 0.10)
    first = submit(core, "first", "small")
    assert isinstance(submit(core, "queued", "small"), Queued)
    assert granted(core.release(first.slot_id, Release(SlotOutcome.OUT_OF_MEMORY))) == []
    assert level(core) is PressureLevel.EMERGENCY
    with pytest.raises(MeshError):
        submit(core, "new", "small")
    clock.now += 11
    assert granted(core.tick()) == ["queued"]
    assert level(core) is PressureLevel.LOW


def test_an_idle_model_unloads_after_keep_alive_and_loads_again_on_demand() -> None:
    core, clock = mesh(spec("s", "small", slots=1, keep_alive=5))
    grant = submit(core, "first", "small")
    core.release(grant.slot_id, Release(SlotOutcome.SUCCEEDED, 0.05))
    clock.now += 4
    assert core.tick() == []
    clock.now += 1
    (unload,) = core.tick()
    assert unload.endpoint_id == "s" and unload.reason == "idle"
    assert core.tick() == []  # asked once, not every tick
    core.unloaded("s")
    assert core.snapshot().endpoints[0].resident is False and core.snapshot().devices[0].reserved_bytes == 0
    assert isinstance(submit(core, "again", "small"), Grant)
    assert core.snapshot().endpoints[0].resident is True


def test_under_pressure_the_least_recently_used_idle_model_is_evicted_first() -> None:
    footprints = {name: Footprint(3 * GIB, 0) for name in ("old", "recent", "new")}
    core, clock = mesh(
        spec("old", "old"), spec("recent", "recent"), spec("new", "new"), budget=7 * GIB, footprints=footprints
    )
    core.unloaded("new")
    for name in ("old", "recent"):
        clock.now += 1
        core.release(submit(core, name, name, Priority.HIGH).slot_id)
    decision, updates = core.submit(Ask("needs-room", "new", Priority.HIGH))
    assert isinstance(decision, Queued)
    assert [(u.endpoint_id, u.reason) for u in updates if hasattr(u, "reason")] == [("old", "evicted")]
    assert granted(core.unloaded("old")) == ["needs-room"]


def test_a_busy_model_is_never_evicted() -> None:
    footprints = {name: Footprint(3 * GIB, 0) for name in ("busy", "new")}
    core, _ = mesh(spec("busy", "busy"), spec("new", "new"), budget=5 * GIB, footprints=footprints)
    core.unloaded("new")
    submit(core, "running", "busy")
    decision, updates = core.submit(Ask("needs-room", "new"))
    assert isinstance(decision, Queued) and updates == []


def test_a_failing_endpoint_is_cut_off_then_probed_back() -> None:
    core, clock = mesh(spec("bad", "m", slots=4), spec("good", "m", slots=1))
    for i in range(3):
        grant = submit(core, f"f{i}", "m")
        assert grant.endpoint.endpoint_id == "bad"
        core.release(grant.slot_id, Release(SlotOutcome.FAILED))
    assert [e.circuit_open for e in core.snapshot().endpoints] == [True, False]
    assert submit(core, "avoids-bad", "m").endpoint.endpoint_id == "good"
    assert isinstance(submit(core, "waits", "m"), Queued)
    clock.now += 5
    (probe,) = [update for update in core.tick() if isinstance(update, Grant)]
    assert probe.ticket_id == "waits" and probe.endpoint.endpoint_id == "bad"
    assert isinstance(submit(core, "only-one-probe", "m"), Queued)
    core.release(probe.slot_id, Release(SlotOutcome.SUCCEEDED, 0.1))
    assert not core.snapshot().endpoints[0].circuit_open
