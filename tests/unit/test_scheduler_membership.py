"""Endpoints joining and leaving the scheduler's core: registration, orphan slots after a restart,
lost slots, silent devices, and nodes that each govern their own endpoints."""

import pytest

from orchestrator.scheduler.core.devices import device_for
from orchestrator.scheduler.core.model import Ask, EndpointSpec, Footprint, Grant, Lost, Queued
from orchestrator.scheduler.core.pressure import PressureLevel
from orchestrator.scheduler.core.scheduler import SlotScheduler
from services.shared.errors import ErrorKind, MeshError

GIB = 1024**3


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registered(node: str, slots: int = 2, model: str = "m") -> EndpointSpec:
    address = f"{node}.example:50061"
    return EndpointSpec(f"{model}@{address}", model, address, slots, node_name=node)


def joined(core: SlotScheduler, spec: EndpointSpec, running: int = 0, kv_bytes: int = 0) -> None:
    """An endpoint registers, then its health says SERVING and it describes its model."""
    assert core.add_endpoint(spec, running) == []
    core.set_available(spec.endpoint_id, True)
    core.describe(spec.endpoint_id, Footprint(GIB, kv_bytes), resident=True)


def used_slots(core: SlotScheduler) -> dict[str, int]:
    return {endpoint.spec.endpoint_id: endpoint.used_slots for endpoint in core.snapshot().endpoints}


def test_a_configured_model_with_no_endpoint_yet_is_unavailable_and_an_unknown_one_is_not_found() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    with pytest.raises(MeshError) as unavailable:
        core.submit(Ask("a", "m"))
    assert unavailable.value.kind is ErrorKind.UNAVAILABLE and unavailable.value.reason == "NO_ENDPOINT_AVAILABLE"
    with pytest.raises(MeshError) as unknown:
        core.submit(Ask("b", "other"))
    assert unknown.value.kind is ErrorKind.NOT_FOUND


def test_a_registered_endpoint_takes_work_only_once_its_health_says_it_serves() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    spec = registered("node-1")
    core.add_endpoint(spec, 0)
    with pytest.raises(MeshError):
        core.submit(Ask("early", "m"))
    assert core.set_available(spec.endpoint_id, True) == []
    decision, _ = core.submit(Ask("a", "m"))
    assert isinstance(decision, Grant) and decision.endpoint == spec


def test_work_already_running_on_a_joining_endpoint_holds_its_slots_until_the_engine_says_it_ended() -> None:
    """After a restart, the scheduler never over-admits: the engine's running requests count as held."""
    core = SlotScheduler([], 10, Clock(), models=["m"])
    spec = registered("node-1", slots=2)
    joined(core, spec, running=2)
    assert used_slots(core) == {spec.endpoint_id: 2}
    waiting, _ = core.submit(Ask("new", "m"))
    assert isinstance(waiting, Queued)
    (grant,) = core.endpoint_activity(spec.endpoint_id, running_requests=1)
    assert isinstance(grant, Grant) and grant.ticket_id == "new"
    assert used_slots(core) == {spec.endpoint_id: 2}
    # The engine now runs the orphan and the new grant: the count does not let a later heartbeat free a slot
    # granted here, nor turn that grant into an orphan.
    assert core.endpoint_activity(spec.endpoint_id, running_requests=2) == []
    core.endpoint_activity(spec.endpoint_id, running_requests=1)
    assert used_slots(core) == {spec.endpoint_id: 1}
    assert core.endpoint_activity(spec.endpoint_id, running_requests=5) == []
    assert used_slots(core) == {spec.endpoint_id: 1}


def test_orphan_slots_reserve_their_kv_cache_in_the_ledger_and_give_it_back() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    spec = registered("node-1", slots=3)
    joined(core, spec, running=2, kv_bytes=100)
    (device,) = core.snapshot().devices
    assert device.reserved_bytes == GIB + 200
    core.endpoint_activity(spec.endpoint_id, 0)
    (device,) = core.snapshot().devices
    assert device.reserved_bytes == GIB


def test_an_endpoint_that_leaves_loses_its_held_slots_and_waiting_work_goes_to_one_that_joins() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    first, second = registered("node-1", slots=1), registered("node-2", slots=1)
    joined(core, first)
    held, _ = core.submit(Ask("held", "m"))
    waiting, _ = core.submit(Ask("waiting", "m"))
    assert isinstance(held, Grant) and isinstance(waiting, Queued)
    updates = core.remove_endpoint(first.endpoint_id, "node-1 went silent")
    assert updates == [Lost("held", held.slot_id, "node-1 went silent")]
    assert core.snapshot().endpoints == ()
    # The holder gives the slot back once it has failed its work; that frees nothing twice.
    assert core.release(held.slot_id) == []
    joined(core, second)
    assert used_slots(core) == {second.endpoint_id: 1}
    core.remove_endpoint(second.endpoint_id, "gone")
    with pytest.raises(MeshError) as still_known:
        core.submit(Ask("later", "m"))
    assert still_known.value.reason == "NO_ENDPOINT_AVAILABLE"


def test_an_endpoint_that_stops_serving_drops_its_orphans_with_its_memory() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    spec = registered("node-1", slots=2)
    joined(core, spec, running=2)
    core.set_available(spec.endpoint_id, False)
    core.set_available(spec.endpoint_id, True)
    assert used_slots(core) == {spec.endpoint_id: 0}


def test_each_node_has_its_own_device_and_its_pressure_governs_only_its_own_endpoints() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    one, two = registered("node-1", slots=4), registered("node-2", slots=4)
    core.observe("node-1/host", used_bytes=12 * GIB, total_bytes=16 * GIB)
    core.observe("node-2/host", used_bytes=1 * GIB, total_bytes=16 * GIB)
    joined(core, one)
    joined(core, two)
    assert {e.spec.endpoint_id: e.device_id for e in core.snapshot().endpoints} == {
        one.endpoint_id: "node-1/host",
        two.endpoint_id: "node-2/host",
    }
    # node-1 is at HIGH (its readings plus the weights), node-2 at LOW; both take work, at their own levels.
    assert core.pressure_level("node-1/host") is PressureLevel.HIGH
    assert core.pressure_level("node-2/host") is PressureLevel.LOW
    grants = [core.submit(Ask(f"a{n}", "m"))[0] for n in range(6)]
    placed = [grant.endpoint.endpoint_id for grant in grants if isinstance(grant, Grant)]
    # HIGH runs one or two at a time; the rest goes to node-2.
    assert 1 <= placed.count(one.endpoint_id) <= 2 and placed.count(two.endpoint_id) == 4


def test_a_silent_device_takes_no_new_work_until_its_monitor_reads_it_again() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    one, two = registered("node-1", slots=1), registered("node-2", slots=1)
    for node in ("node-1", "node-2"):
        core.observe(f"{node}/host", used_bytes=GIB, total_bytes=16 * GIB)
    joined(core, one)
    joined(core, two)
    core.devices_silent(["node-2/host"])
    first, _ = core.submit(Ask("a", "m"))
    second, _ = core.submit(Ask("b", "m"))
    assert isinstance(first, Grant) and first.endpoint == one
    assert isinstance(second, Queued)
    silent = {device.device_id: device.silent for device in core.snapshot().devices}
    assert silent == {"node-1/host": False, "node-2/host": True}
    (grant,) = core.observe("node-2/host", used_bytes=GIB, total_bytes=16 * GIB)
    assert isinstance(grant, Grant) and grant.ticket_id == "b" and grant.endpoint == two


def test_an_endpoint_registered_before_its_node_is_read_moves_onto_the_device_when_it_is() -> None:
    core = SlotScheduler([], 10, Clock(), models=["m"])
    spec = registered("node-1")
    joined(core, spec)
    core.submit(Ask("a", "m"))
    core.observe("node-2/host", used_bytes=GIB, total_bytes=16 * GIB)
    assert {e.device_id for e in core.snapshot().endpoints} == {""}
    core.observe("node-1/host", used_bytes=GIB, total_bytes=16 * GIB)
    devices = {device.device_id: device.reserved_bytes for device in core.snapshot().devices}
    assert devices == {"node-1/host": GIB, "node-2/host": 0}


@pytest.mark.parametrize(
    ("node", "device", "known", "expected"),
    [
        ("node-1", "", ["node-2/gpu0", "node-1/gpu1", "node-1/gpu0"], "node-1/gpu0"),
        ("node-1", "", ["node-2/host", "node-1/host"], "node-1/host"),
        ("node-1", "gpu1", ["node-1/gpu0", "node-1/gpu1"], "node-1/gpu1"),
        ("node-1", "gpu1", ["node-2/gpu1"], None),
        ("", "gpu1", ["node-2/gpu0", "node-2/gpu1"], "node-2/gpu1"),
        ("", "", ["node-2/host", "node-1/host"], "node-2/host"),
        ("", "", [], None),
    ],
)
def test_an_endpoint_runs_on_its_own_nodes_device(node: str, device: str, known: list[str], expected: str) -> None:
    assert device_for(node, device, known) == expected
