"""The memory ledger of one device: what the scheduler has reserved on it, checked against what is measured.

Reservations are the weights of each resident model plus the KV cache of each running request. The monitor's
measured use can be higher (other processes, allocator slack): the larger of the two is what counts, so
admission never trusts an estimate that reality has already outgrown.

A configured budget caps what meshserve reserves; the device's measured use still counts against the
whole device. So a 2 GiB budget on a 24 GiB host admits 2 GiB of models and requests, and still backs off
when the host as a whole fills up.
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
    # None until the device has been measured: with no budget either, nothing limits admission.
    device_total_bytes: int | None = None
    budget_bytes: int | None = None
    measured_used_bytes: int = 0
    peak_reserved_bytes: int = field(default=0, init=False)
    _weights: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _reservations: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def capacity_bytes(self) -> int | None:
        known = [limit for limit in (self.device_total_bytes, self.budget_bytes) if limit is not None]
        return min(known) if known else None

    @property
    def reserved_bytes(self) -> int:
        return sum(self._weights.values()) + sum(self._reservations.values())

    @property
    def used_bytes(self) -> int:
        return max(self.reserved_bytes, self.measured_used_bytes)

    @property
    def used_fraction(self) -> float:
        capacity = self.capacity_bytes
        if capacity == 0 or self.device_total_bytes == 0:
            return 1.0
        shares = [0.0]
        if capacity is not None:
            shares.append(self.reserved_bytes / capacity)
        if self.device_total_bytes is not None:
            shares.append(self.measured_used_bytes / self.device_total_bytes)
        return max(shares)

    def fits(self, extra_bytes: int) -> bool:
        capacity = self.capacity_bytes
        within_budget = capacity is None or self.reserved_bytes + extra_bytes <= capacity
        within_device = (
            self.device_total_bytes is None or self.measured_used_bytes + extra_bytes <= self.device_total_bytes
        )
        return within_budget and within_device

    def observe(self, measured_used_bytes: int, device_total_bytes: int | None = None) -> None:
        self.measured_used_bytes = measured_used_bytes
        if device_total_bytes is not None:
            self.device_total_bytes = device_total_bytes

    def load(self, model: str, weights_bytes: int) -> None:
        self._weights[model] = weights_bytes
        self._note_peak()

    def unload(self, model: str) -> None:
        self._weights.pop(model, None)

    def is_resident(self, model: str) -> bool:
        return model in self._weights

    def reserve(self, slot_id: str, kv_bytes: int) -> None:
        if slot_id in self._reservations:
            raise ValueError(f"{slot_id} is already reserved")
        self._reservations[slot_id] = kv_bytes
        self._note_peak()

    def release(self, slot_id: str) -> None:
        self._reservations.pop(slot_id, None)

    def _note_peak(self) -> None:
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
