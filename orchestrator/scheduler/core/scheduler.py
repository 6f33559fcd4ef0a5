"""The scheduler's state machine: who holds which slot, who waits, and who is next.

Pure and synchronous: every method takes the current state to the next and returns what callers must be
told. The async shell delivers those messages; time comes from an injected clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.scheduler.core.model import (
    Ask,
    EndpointSnapshot,
    EndpointSpec,
    Expired,
    Grant,
    Queued,
    SchedulerSnapshot,
    Shed,
)
from orchestrator.scheduler.core.queue import DEFAULT_AGING_SECONDS, PriorityQueue, Waiting
from services.shared.errors import not_found, resource_exhausted, unavailable

# Weight of the newest slot hold time in the running average behind retry delays.
_HOLD_SMOOTHING = 0.2
_INITIAL_HOLD_SECONDS = 2.0
_MIN_RETRY_SECONDS = 0.1
_MAX_RETRY_SECONDS = 60.0
_NO_ENDPOINT_RETRY_SECONDS = 1.0


@dataclass
class _Endpoint:
    spec: EndpointSpec
    available: bool = True
    slots_in_use: set[str] = field(default_factory=set)

    @property
    def free_slots(self) -> int:
        return self.spec.total_slots - len(self.slots_in_use) if self.available else 0


@dataclass(frozen=True)
class _Held:
    endpoint_id: str
    granted_at: float


class SlotScheduler:
    def __init__(
        self,
        endpoints: list[EndpointSpec],
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        start_available: bool = True,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
    ) -> None:
        if len({spec.endpoint_id for spec in endpoints}) != len(endpoints):
            raise ValueError("endpoint ids must be unique")
        self._endpoints = {spec.endpoint_id: _Endpoint(spec, start_available) for spec in endpoints}
        self._queue = PriorityQueue(clock, aging_seconds)
        self._held: dict[str, _Held] = {}
        self._max_queue = max_queue
        self._clock = clock
        self._slot_numbers = itertools.count(1)
        self._mean_hold = _INITIAL_HOLD_SECONDS

    def submit(self, ask: Ask) -> tuple[Grant | Queued, list[Shed]]:
        """Grants the ask at once if a slot is free, else queues it, shedding a less urgent ask if full."""
        endpoints = self._endpoints_of(ask.model)
        if not endpoints:
            raise not_found("UNKNOWN_MODEL", f"no model named {ask.model!r}", model=ask.model)
        if not any(endpoint.available for endpoint in endpoints):
            raise unavailable("NO_ENDPOINT_AVAILABLE", f"no endpoint of {ask.model} is up", _NO_ENDPOINT_RETRY_SECONDS)
        endpoint = self._least_loaded(endpoints)
        if endpoint is not None:
            return self._grant(endpoint, ask, enqueued_at=self._clock()), []
        shed = self._make_room_for(ask)
        self._queue.push(Waiting(ask, self._clock()))
        return self._position_of(ask.ticket_id), shed

    def release(self, slot_id: str) -> list[Grant | Expired]:
        """Frees a slot and grants it to whoever waits longest at the highest priority."""
        held = self._held.pop(slot_id, None)
        if held is None:
            return []
        endpoint = self._endpoints[held.endpoint_id]
        endpoint.slots_in_use.discard(slot_id)
        hold = self._clock() - held.granted_at
        self._mean_hold += _HOLD_SMOOTHING * (hold - self._mean_hold)
        return self._drain()

    def withdraw(self, ticket_id: str) -> bool:
        """Takes a waiting ask out of the queue, as when its caller goes away."""
        return self._queue.remove(ticket_id) is not None

    def set_available(self, endpoint_id: str, available: bool) -> list[Grant | Expired]:
        """Marks an endpoint up or down; an endpoint coming up may grant to waiting asks."""
        self._endpoints[endpoint_id].available = available
        return self._drain() if available else []

    def expire(self) -> list[Expired]:
        """Drops the waiting asks whose deadline has passed."""
        return [Expired(waiting.ask.ticket_id) for waiting in self._queue.drop_expired()]

    def positions(self) -> list[Queued]:
        return [self._position_of(waiting.ask.ticket_id) for waiting in self._queue.in_order()]

    def retry_after_seconds(self, model: str) -> float:
        """How long until a new ask for the model could be admitted, from how fast slots have been freeing."""
        slots = sum(endpoint.spec.total_slots for endpoint in self._endpoints_of(model)) or 1
        waiting = sum(1 for waiting in self._queue.in_order() if waiting.ask.model == model)
        estimate = self._mean_hold * (waiting + 1) / slots
        return min(max(estimate, _MIN_RETRY_SECONDS), _MAX_RETRY_SECONDS)

    def snapshot(self) -> SchedulerSnapshot:
        endpoints = tuple(
            EndpointSnapshot(endpoint.spec, len(endpoint.slots_in_use), endpoint.available)
            for endpoint in self._endpoints.values()
        )
        return SchedulerSnapshot(endpoints, self._queue.depth_by_priority())

    def _endpoints_of(self, model: str) -> list[_Endpoint]:
        return [endpoint for endpoint in self._endpoints.values() if endpoint.spec.model == model]

    @staticmethod
    def _least_loaded(endpoints: list[_Endpoint]) -> _Endpoint | None:
        candidates = [endpoint for endpoint in endpoints if endpoint.free_slots > 0]
        return max(candidates, key=lambda endpoint: endpoint.free_slots, default=None)

    def _grant(self, endpoint: _Endpoint, ask: Ask, enqueued_at: float) -> Grant:
        slot_id = f"{endpoint.spec.endpoint_id}#{next(self._slot_numbers)}"
        now = self._clock()
        endpoint.slots_in_use.add(slot_id)
        self._held[slot_id] = _Held(endpoint.spec.endpoint_id, now)
        return Grant(ask.ticket_id, slot_id, endpoint.spec, now - enqueued_at)

    def _make_room_for(self, ask: Ask) -> list[Shed]:
        if len(self._queue) < self._max_queue:
            return []
        victim = self._queue.least_urgent()
        if victim is None or victim.ask.priority >= ask.priority:
            raise resource_exhausted(
                "QUEUE_FULL",
                f"the queue is full ({self._max_queue} waiting)",
                retry_after_seconds=self.retry_after_seconds(ask.model),
                queue_limit=self._max_queue,
            )
        self._queue.remove(victim.ask.ticket_id)
        return [Shed(victim.ask.ticket_id, self.retry_after_seconds(victim.ask.model))]

    def _drain(self) -> list[Grant | Expired]:
        # Expired asks go first, so a slot is never granted to a caller that has stopped waiting.
        grants: list[Grant | Expired] = list(self.expire())
        while True:
            models = {e.spec.model for e in self._endpoints.values() if e.free_slots > 0}
            waiting = self._queue.first_for(models)
            if waiting is None:
                return grants
            endpoint = self._least_loaded(self._endpoints_of(waiting.ask.model))
            assert endpoint is not None
            self._queue.remove(waiting.ask.ticket_id)
            grants.append(self._grant(endpoint, waiting.ask, waiting.enqueued_at))

    def _position_of(self, ticket_id: str) -> Queued:
        order = self._queue.in_order()
        model = next(waiting.ask.model for waiting in order if waiting.ask.ticket_id == ticket_id)
        same_model = [waiting.ask.ticket_id for waiting in order if waiting.ask.model == model]
        return Queued(ticket_id, same_model.index(ticket_id), len(same_model))
