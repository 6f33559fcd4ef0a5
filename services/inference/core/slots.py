"""A fixed number of generation slots. Past them a request is refused at once, never queued here:
queueing is the scheduler's job, and it needs an honest "full" to do it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from services.shared.errors import resource_exhausted

# Weight of the newest request duration in the running average behind the retry hint.
_DURATION_SMOOTHING = 0.2
_MIN_RETRY_SECONDS = 0.05
_MAX_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class SlotLease:
    slot_number: int
    started_at: float


class SlotPool:
    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        if total < 1:
            raise ValueError("a slot pool needs at least one slot")
        self._total = total
        self._free = list(range(total - 1, -1, -1))
        self._clock = clock
        self._mean_duration = 1.0

    @property
    def total(self) -> int:
        return self._total

    @property
    def free(self) -> int:
        return len(self._free)

    def try_acquire(self) -> SlotLease:
        if not self._free:
            raise resource_exhausted(
                "SLOTS_EXHAUSTED",
                f"all {self._total} slots are busy",
                retry_after_seconds=self.retry_hint_seconds(),
                total_slots=self._total,
            )
        return SlotLease(self._free.pop(), self._clock())

    def release(self, lease: SlotLease) -> None:
        if lease.slot_number in self._free:
            raise ValueError(f"slot {lease.slot_number} released twice")
        duration = self._clock() - lease.started_at
        self._mean_duration += _DURATION_SMOOTHING * (duration - self._mean_duration)
        self._free.append(lease.slot_number)

    def retry_hint_seconds(self) -> float:
        """When a slot is likely to free up: the typical request duration spread over the slots."""
        estimate = self._mean_duration / self._total
        return min(max(estimate, _MIN_RETRY_SECONDS), _MAX_RETRY_SECONDS)
