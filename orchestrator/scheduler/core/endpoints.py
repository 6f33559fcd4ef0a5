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
