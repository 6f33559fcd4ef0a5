"""The memory ledger of one device: what the scheduler has reserved on it, checked against what is measured.

Reservations are the weights of each resident model plus the KV cache of each running request. The monitor's
measured use can be higher (other processes, allocator slack): the larger of the two is what counts, so
admission never trusts an estimate that reality has already outgrown.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KvShape:
    """What a model's KV cache costs per token, from its metadata."""

    layers: int
    kv_heads: int
    head_dim: int
    element_bytes: int = 2

    def bytes_for(self, tokens: int) -> int:
        # Keys and values, per layer, per KV head, per position.
        return 2 * self.layers * self.kv_heads * self.head_dim * tokens * self.element_bytes


@dataclass
class MemoryLedger:
    device_total_bytes: int
    # A configured budget smaller than the device caps what the scheduler may use of it.
    budget_bytes: int | None = None
    measured_used_bytes: int = 0
    _weights: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _reservations: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def capacity_bytes(self) -> int:
        if self.budget_bytes is None:
            return self.device_total_bytes
        return min(self.device_total_bytes, self.budget_bytes)

    @property
    def reserved_bytes(self) -> int:
        return sum(self._weights.values()) + sum(self._reservations.values())

    @property
    def used_bytes(self) -> int:
        return max(self.reserved_bytes, self.measured_used_bytes)

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.capacity_bytes if self.capacity_bytes else 1.0

    def fits(self, extra_bytes: int) -> bool:
        return self.used_bytes + extra_bytes <= self.capacity_bytes

    def observe(self, measured_used_bytes: int, device_total_bytes: int | None = None) -> None:
        self.measured_used_bytes = measured_used_bytes
        if device_total_bytes:
            self.device_total_bytes = device_total_bytes

    def load(self, model: str, weights_bytes: int) -> None:
        self._weights[model] = weights_bytes

    def unload(self, model: str) -> None:
        self._weights.pop(model, None)

    def is_resident(self, model: str) -> bool:
        return model in self._weights

    def reserve(self, slot_id: str, kv_bytes: int) -> None:
        if slot_id in self._reservations:
            raise ValueError(f"{slot_id} is already reserved")
        self._reservations[slot_id] = kv_bytes

    def release(self, slot_id: str) -> None:
        self._reservations.pop(slot_id, None)
