"""An endpoint as the scheduler tracks it: up or down, loaded or not, its slots, and its health record.

Its weights and running requests live in its device's ledger; the methods here keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.scheduler.core.breaker import EndpointHealthRecord
from orchestrator.scheduler.core.devices import Device
from orchestrator.scheduler.core.model import EndpointSpec, Footprint


@dataclass
class TrackedEndpoint:
    spec: EndpointSpec
    device: Device
    health: EndpointHealthRecord
    available: bool = True
    resident: bool = True
    unloading: bool = False
    footprint: Footprint = Footprint(0, 0)
    last_used: float = 0.0
    slots_in_use: set[str] = field(default_factory=set)
    # Requests the engine runs that this scheduler did not grant: work granted before a restart. They
    # hold slots (and ledger room) like any other until the engine reports them finished.
    orphans: set[str] = field(default_factory=set)

    @property
    def endpoint_id(self) -> str:
        return self.spec.endpoint_id

    @property
    def free_slots(self) -> int:
        return self.spec.total_slots - len(self.slots_in_use) if self.available else 0

    @property
    def idle(self) -> bool:
        return self.resident and not self.unloading and not self.slots_in_use

    @property
    def full_bytes(self) -> int:
        """What the model costs with every slot running: how models are compared for size."""
        return self.footprint.full_bytes(self.spec.total_slots)

    @property
    def cost_to_start(self) -> int:
        """What one more request costs the ledger: its KV cache, plus the weights if they must load first."""
        weights = 0 if self.resident else self.footprint.weights_bytes
        return weights + self.footprint.kv_bytes_per_slot

    def set_footprint(self, footprint: Footprint) -> None:
        """What its model costs, as it reports; requests already running are reserved at the new cost."""
        self.footprint = footprint
        for slot_id in self.slots_in_use:
            self.device.ledger.release(slot_id)
            self.device.ledger.reserve(slot_id, footprint.kv_bytes_per_slot)

    def set_resident(self, resident: bool) -> None:
        self.resident = resident
        if resident:
            self.device.ledger.load(self.endpoint_id, self.footprint.weights_bytes)
        else:
            self.device.ledger.unload(self.endpoint_id)

    def start(self, slot_id: str) -> None:
        # A model that is not loaded loads on this request: its weights count from now.
        self.set_resident(True)
        self.slots_in_use.add(slot_id)
        self.device.ledger.reserve(slot_id, self.footprint.kv_bytes_per_slot)

    def finish(self, slot_id: str) -> None:
        self.slots_in_use.discard(slot_id)
        self.device.ledger.release(slot_id)

    def adopt_orphans(self, running_requests: int) -> None:
        """Takes the engine's word for work already running when this scheduler first hears of it."""
        for n in range(len(self.orphans), running_requests):
            orphan_id = f"{self.endpoint_id}#orphan-{n + 1}"
            self.orphans.add(orphan_id)
            self.start(orphan_id)

    def orphans_ended(self, running_requests: int) -> None:
        """The engine runs `running_requests` now; what it no longer runs beyond the slots granted here ended.

        The count only shrinks: a heartbeat that lags a grant must not turn new work into orphans.
        """
        keep = max(0, running_requests - (len(self.slots_in_use) - len(self.orphans)))
        while len(self.orphans) > keep:
            self.finish(self.orphans.pop())

    def drop_orphans(self) -> None:
        while self.orphans:
            self.finish(self.orphans.pop())

    def move_to(self, device: Device) -> None:
        """Carries the weights and running requests over to another device's ledger."""
        resident, running = self.resident, list(self.slots_in_use)
        self.set_resident(False)
        for slot_id in running:
            self.device.ledger.release(slot_id)
        self.device = device
        self.set_resident(resident)
        for slot_id in running:
            device.ledger.reserve(slot_id, self.footprint.kv_bytes_per_slot)
