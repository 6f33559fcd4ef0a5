"""The scheduler's state machine: who holds which slot, who waits, who is next, and which models stay loaded.

Pure and synchronous: every method takes the current state to the next and returns what callers must be
told. The async shell delivers those messages and carries out unloads; time comes from an injected clock.

A slot is granted only when every limit agrees: the endpoint is up and its circuit closed, the device's
pressure level lets the ask's priority start and this model run, the engine is under the level's
concurrency, and the ledger has room for the request's KV cache (and the model's weights if it is not
loaded). Otherwise the ask waits in the queue, or is refused at once when its device is in EMERGENCY.

Endpoints join and leave while it runs (registration, from any node). One that leaves takes its held
slots with it: their holders are told the work is Lost. One that joins brings the work its engine is
already running, granted by a scheduler before a restart, as orphan slots, so a restart never over-admits.

With background_yields, LOW work is background work: it starts only on a device where nothing more urgent
runs or waits, never in an endpoint's last free slot, and more urgent work arriving recalls it (the holder
stops and releases), so that batch work fills idle capacity without slowing interactive work: an urgent
ask finds a slot free at once, and the device to itself within a token.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orchestrator.scheduler.core.breaker import BreakerPolicy
from orchestrator.scheduler.core.caller_limits import CallerBook
from orchestrator.scheduler.core.devices import Device, PressurePolicy
from orchestrator.scheduler.core.endpoints import TrackedEndpoint
from orchestrator.scheduler.core.model import (
    Ask,
    DeviceSnapshot,
    EndpointSnapshot,
    EndpointSpec,
    Expired,
    Footprint,
    Grant,
    Lost,
    Queued,
    Recall,
    Release,
    SchedulerSnapshot,
    Shed,
    Unload,
)
from orchestrator.scheduler.core.placement import best, may_start_on
from orchestrator.scheduler.core.pressure import PressureLevel
from orchestrator.scheduler.core.queue import DEFAULT_AGING_SECONDS, PriorityQueue, Waiting
from orchestrator.scheduler.core.residency import eviction_victims, idle_past_keep_alive
from orchestrator.scheduler.core.roster import Roster
from services.shared.domain import Priority, SlotOutcome
from services.shared.errors import not_found, resource_exhausted, unavailable

# Weight of the newest slot hold time in the running average behind retry delays.
_HOLD_SMOOTHING = 0.2
_INITIAL_HOLD_SECONDS = 2.0
_MIN_RETRY_SECONDS = 0.1
_MAX_RETRY_SECONDS = 60.0
_NO_ENDPOINT_RETRY_SECONDS = 1.0

Update = Grant | Queued | Shed | Expired | Unload | Recall | Lost


@dataclass(frozen=True)
class _Held:
    endpoint_id: str
    granted_at: float
    # Whose limits the slot counts against; empty for asks without limits.
    limited_caller: str = ""
    priority: Priority = Priority.NORMAL
    ticket_id: str = ""


def _spare_slot_left(endpoint: TrackedEndpoint) -> bool:
    # The last free slot is kept for urgent work, which then never waits for a recalled one to be released;
    # an endpoint of one slot has none to keep.
    return endpoint.free_slots >= 2 or endpoint.spec.total_slots == 1


class SlotScheduler:
    def __init__(
        self,
        endpoints: list[EndpointSpec],
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        start_available: bool = True,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
        pressure: PressurePolicy | None = None,
        breaker: BreakerPolicy | None = None,
        background_yields: bool = False,
        models: Iterable[str] = (),
    ) -> None:
        if len({spec.endpoint_id for spec in endpoints}) != len(endpoints):
            raise ValueError("endpoint ids must be unique")
        self._pressure = pressure or PressurePolicy()
        self._clock = clock
        self._roster = Roster(self._pressure, breaker, clock, models)
        for spec in endpoints:
            self._roster.track(spec, start_available)
        self._queue = PriorityQueue(clock, aging_seconds)
        self._held: dict[str, _Held] = {}
        self._max_queue = max_queue
        self._slot_numbers = itertools.count(1)
        self._mean_hold = _INITIAL_HOLD_SECONDS
        self._callers = CallerBook()
        self._background_yields = background_yields
        self._recalled: set[str] = set()

    # --- asks and releases -------------------------------------------------------------------------------

    def submit(self, ask: Ask) -> tuple[Grant | Queued, list[Update]]:
        """Grants the ask at once if it may start, else queues it, shedding a less urgent ask if full.

        An ask above its caller's priority ceiling is capped to it; one past its caller's limits is refused.
        """
        ask = ask.within_ceiling()
        if ask.limits is not None:
            self._callers.check(ask.caller_id, ask.limits, self._clock())
        for model in ask.models:
            if model not in self._roster.known_models:
                raise not_found("UNKNOWN_MODEL", f"no model named {model!r}", model=model)
        endpoints = [endpoint for model in ask.models for endpoint in self._roster.of_model(model)]
        if not any(endpoint.available for endpoint in endpoints):
            raise unavailable("NO_ENDPOINT_AVAILABLE", f"no endpoint of {ask.model} is up", _NO_ENDPOINT_RETRY_SECONDS)
        self._refuse_if_no_device_admits(ask, endpoints)
        recalls = self._recalls_for(ask)
        endpoint = self._place(ask)
        if endpoint is not None:
            self._count_against_limits(ask)
            return self._grant(endpoint, ask, enqueued_at=self._clock()), recalls
        shed = self._make_room_for(ask)
        self._count_against_limits(ask)
        self._queue.push(Waiting(ask, self._clock()))
        return self._position_of(ask.ticket_id), [*recalls, *shed, *self._evict_for(ask)]

    def release(self, slot_id: str, release: Release | None = None) -> list[Update]:
        """Frees a slot, learns from how its work ended, and grants to whoever is next."""
        held = self._held.pop(slot_id, None)
        self._recalled.discard(slot_id)
        if held is None:
            return []
        now = self._clock()
        if held.limited_caller:
            self._callers.ended(held.limited_caller, (release or Release()).tokens, now)
        endpoint = self._roster.endpoints.get(held.endpoint_id)
        if endpoint is None:
            # Its endpoint left the mesh; its reservation went with it.
            return self._drain()
        endpoint.finish(slot_id)
        endpoint.last_used = now
        self._mean_hold += _HOLD_SMOOTHING * (now - held.granted_at - self._mean_hold)
        self._learn(endpoint, release or Release(), now)
        endpoint.device.reassess(now)
        return self._drain()

    def withdraw(self, ticket_id: str) -> bool:
        """Takes a waiting ask out of the queue, as when its caller goes away."""
        waiting = self._queue.remove(ticket_id)
        if waiting is not None:
            self._left_unserved(waiting.ask)
        return waiting is not None

    # --- what the shell observes ----------------------------------------------------------------------------

    def add_endpoint(self, spec: EndpointSpec, running_requests: int = 0) -> list[Update]:
        """An endpoint joins, down until its health says it serves, with the work its engine already runs."""
        endpoint = self._roster.track(spec, available=False)
        endpoint.adopt_orphans(running_requests)
        return []

    def remove_endpoint(self, endpoint_id: str, reason: str) -> list[Update]:
        """An endpoint leaves: its memory is given back, and the holders of its slots are told they are lost."""
        endpoint = self._roster.untrack(endpoint_id)
        if endpoint is None:
            return []
        endpoint.drop_orphans()
        for slot_id in list(endpoint.slots_in_use):
            endpoint.finish(slot_id)
        endpoint.set_resident(False)
        endpoint.device.reassess(self._clock())
        lost = [Lost(held.ticket_id, slot_id, reason) for slot_id, held in self._held.items()
                if held.endpoint_id == endpoint_id]  # fmt: skip
        return [*lost, *self._drain()]

    def endpoint_activity(self, endpoint_id: str, running_requests: int) -> list[Update]:
        """The engine's own count of what it runs: orphan slots it has finished are freed."""
        endpoint = self._roster.endpoints.get(endpoint_id)
        if endpoint is None or not endpoint.orphans:
            return []
        endpoint.orphans_ended(running_requests)
        endpoint.device.reassess(self._clock())
        return self._drain()

    def devices_silent(self, device_ids: Iterable[str]) -> list[Update]:
        """The monitor of these devices went quiet: nothing new starts on them until it reads them again."""
        for device_id in device_ids:
            if device_id in self._roster.devices:
                self._roster.devices[device_id].silent = True
        return []

    def set_available(self, endpoint_id: str, available: bool) -> list[Update]:
        """Marks an endpoint up or down; an endpoint coming up may grant to waiting asks."""
        endpoint = self._roster.endpoints.get(endpoint_id)
        if endpoint is None:
            return []
        endpoint.available = available
        if not available:
            # A restarted engine comes back through describe(); until then it holds no memory and runs nothing.
            endpoint.drop_orphans()
            endpoint.set_resident(False)
            endpoint.unloading = False
            return []
        return self._drain()

    def describe(self, endpoint_id: str, footprint: Footprint, resident: bool) -> list[Update]:
        """What the endpoint reports of itself: the cost of its model, and whether it is loaded now."""
        endpoint = self._roster.endpoints.get(endpoint_id)
        if endpoint is None:
            return []
        endpoint.set_footprint(footprint)
        endpoint.set_resident(resident or bool(endpoint.slots_in_use))
        endpoint.device.reassess(self._clock())
        return self._drain()

    def observe(
        self, device_id: str, used_bytes: int, total_bytes: int, temperature_celsius: float | None = None
    ) -> list[Update]:
        """A reading from the node's monitor: the device's measured memory and temperature."""
        device = self._roster.device(device_id)
        device.observe(used_bytes, total_bytes, temperature_celsius, self._clock())
        return self._drain()

    def tick(self) -> list[Update]:
        """Called often: drops expired asks, lets time-based states pass, and unloads models idle too long."""
        self._reassess(self._roster.all_devices())
        self._callers.forget_idle(self._clock())
        idle = idle_past_keep_alive(list(self._roster.endpoints.values()), self._clock())
        return [*self._drain(), *self._unload(idle, "idle")]

    def unloaded(self, endpoint_id: str) -> list[Update]:
        endpoint = self._roster.endpoints.get(endpoint_id)
        if endpoint is None:
            return []
        endpoint.unloading = False
        endpoint.set_resident(False)
        endpoint.device.reassess(self._clock())
        return self._drain()

    def unload_failed(self, endpoint_id: str) -> list[Update]:
        if endpoint_id in self._roster.endpoints:
            self._roster.endpoints[endpoint_id].unloading = False
        return self._drain()

    # --- reading the state ------------------------------------------------------------------------------------

    def pressure_level(self, device_id: str) -> PressureLevel | None:
        device = self._roster.devices.get(device_id)
        return device.level if device is not None else None

    def expire(self) -> list[Expired]:
        """Drops the waiting asks whose deadline has passed."""
        expired = self._queue.drop_expired()
        for waiting in expired:
            self._left_unserved(waiting.ask)
        return [Expired(waiting.ask.ticket_id) for waiting in expired]

    def positions(self) -> list[Queued]:
        return [self._position_of(waiting.ask.ticket_id) for waiting in self._queue.in_order()]

    def retry_after_seconds(self, model: str) -> float:
        """How long until a new ask for the model could be admitted, from how fast slots have been freeing."""
        slots = sum(endpoint.spec.total_slots for endpoint in self._roster.of_model(model)) or 1
        waiting = sum(1 for waiting in self._queue.in_order() if waiting.ask.model == model)
        estimate = self._mean_hold * (waiting + 1) / slots
        return min(max(estimate, _MIN_RETRY_SECONDS), _MAX_RETRY_SECONDS)

    def snapshot(self) -> SchedulerSnapshot:
        now = self._clock()
        endpoints = tuple(
            EndpointSnapshot(
                endpoint.spec,
                len(endpoint.slots_in_use),
                endpoint.available,
                endpoint.resident,
                not endpoint.health.allows(now),
                endpoint.health.latency_ema_seconds,
                endpoint.health.failure_rate,
                endpoint.device.device_id,
            )
            for endpoint in self._roster.endpoints.values()
        )
        devices = tuple(
            DeviceSnapshot(
                device.device_id,
                int(device.level),
                int(device.thermal),
                device.ledger.capacity_bytes,
                device.ledger.reserved_bytes,
                device.ledger.peak_reserved_bytes,
                device.ledger.measured_used_bytes,
                device.silent,
            )
            for device in self._roster.all_devices()
        )
        return SchedulerSnapshot(endpoints, self._queue.depth_by_priority(), devices)

    # --- placement ----------------------------------------------------------------------------------------------

    def _place(self, ask: Ask) -> TrackedEndpoint | None:
        """The endpoint to run the ask on now, or None. Fallback models only under HIGH or CRITICAL pressure."""
        primary = self._startable(ask.model, ask)
        if primary or not ask.fallback_models:
            return best(primary)
        levels = {endpoint.device.level for endpoint in self._roster.of_model(ask.model)}
        if not levels & {PressureLevel.HIGH, PressureLevel.CRITICAL}:
            return None
        for model in ask.fallback_models:
            candidates = self._startable(model, ask)
            if candidates:
                return best(candidates)
        return None

    def _startable(self, model: str, ask: Ask) -> list[TrackedEndpoint]:
        now = self._clock()
        startable = [
            e for e in self._roster.of_model(model) if may_start_on(e, ask.priority, now, self._roster.neighbours(e))
        ]
        if self._background_yields and ask.priority is Priority.LOW:
            startable = [e for e in startable if _spare_slot_left(e) and not self._urgent_work_near(e)]
        return startable

    # --- background work ----------------------------------------------------------------------------------------

    def _urgent_work_near(self, endpoint: TrackedEndpoint) -> bool:
        """Whether anything above LOW runs, or waits, on the endpoint's device."""
        near = {other.spec.endpoint_id for other in self._roster.neighbours(endpoint)}
        if any(held.endpoint_id in near and held.priority > Priority.LOW for held in self._held.values()):
            return True
        models = {self._roster.endpoints[endpoint_id].spec.model for endpoint_id in near}
        return any(w.ask.priority > Priority.LOW and w.ask.model in models for w in self._queue.in_order())

    def _recalls_for(self, ask: Ask) -> list[Recall]:
        """The LOW slots to take back for an urgent ask: every one on the devices its models run on."""
        if not self._background_yields or ask.priority is Priority.LOW:
            return []
        near = {other.spec.endpoint_id for model in ask.models for e in self._roster.of_model(model)
                for other in self._roster.neighbours(e)}  # fmt: skip
        recalls = [
            Recall(held.ticket_id, slot_id)
            for slot_id, held in self._held.items()
            if held.priority is Priority.LOW and held.endpoint_id in near and slot_id not in self._recalled
        ]
        self._recalled.update(recall.slot_id for recall in recalls)
        return recalls

    def _refuse_if_no_device_admits(self, ask: Ask, endpoints: list[TrackedEndpoint]) -> None:
        devices = {id(endpoint.device): endpoint.device for endpoint in endpoints if endpoint.available}
        self._reassess(devices.values())
        if devices and all(device.refuses_new_work for device in devices.values()):
            raise resource_exhausted(
                "MEMORY_PRESSURE_EMERGENCY",
                f"the device of {ask.model} is in memory or thermal emergency; nothing new starts until it recovers",
                retry_after_seconds=max(self._pressure.oom_recovery_seconds / 2, self.retry_after_seconds(ask.model)),
                model=ask.model,
            )

    def _reassess(self, devices: Iterable[Device]) -> None:
        now = self._clock()
        for device in devices:
            device.reassess(now)

    def _grant(self, endpoint: TrackedEndpoint, ask: Ask, enqueued_at: float) -> Grant:
        slot_id = f"{endpoint.spec.endpoint_id}#{next(self._slot_numbers)}"
        now = self._clock()
        endpoint.start(slot_id)
        endpoint.last_used = now
        endpoint.health.started(now)
        level = endpoint.device.reassess(now)
        self._held[slot_id] = _Held(
            endpoint.spec.endpoint_id, now, ask.caller_id if ask.limits else "", ask.priority, ask.ticket_id
        )
        return Grant(ask.ticket_id, slot_id, endpoint.spec, now - enqueued_at, int(level))

    def _learn(self, endpoint: TrackedEndpoint, release: Release, now: float) -> None:
        outcome = release.outcome
        if outcome is SlotOutcome.SUCCEEDED:
            endpoint.health.succeeded(now, release.first_token_seconds)
        elif outcome is SlotOutcome.FAILED:
            endpoint.health.failed(now)
        elif outcome is SlotOutcome.OUT_OF_MEMORY:
            # The endpoint works; the device's memory ran out under it. Nothing new starts there for a while.
            endpoint.health.abandoned()
            endpoint.device.out_of_memory(now)
        else:
            endpoint.health.abandoned()

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
        self._left_unserved(victim.ask)
        return [Shed(victim.ask.ticket_id, self.retry_after_seconds(victim.ask.model))]

    def _count_against_limits(self, ask: Ask) -> None:
        if ask.limits is not None:
            self._callers.started(ask.caller_id, self._clock())

    def _left_unserved(self, ask: Ask) -> None:
        if ask.limits is not None:
            self._callers.ended(ask.caller_id, 0, self._clock())

    def _drain(self) -> list[Update]:
        # Expired asks go first, so a slot is never granted to a caller that has stopped waiting.
        updates: list[Update] = list(self.expire())
        for waiting in self._queue.in_order():
            endpoint = self._place(waiting.ask)
            if endpoint is None:
                updates.extend(self._evict_for(waiting.ask))
                continue
            self._queue.remove(waiting.ask.ticket_id)
            updates.append(self._grant(endpoint, waiting.ask, waiting.enqueued_at))
        return updates

    # --- residency ----------------------------------------------------------------------------------------------

    def _evict_for(self, ask: Ask) -> list[Unload]:
        """Unloads least recently used idle models when the ask's model is not loaded and does not fit."""
        endpoints = self._roster.of_model(ask.model)
        target = next((e for e in endpoints if e.available and not e.resident), None)
        if target is None or any(e.resident for e in endpoints):
            return []
        victims = eviction_victims(target, [e for e in self._roster.neighbours(target) if e is not target])
        return self._unload(victims, "evicted")

    def _unload(self, endpoints: list[TrackedEndpoint], reason: str) -> list[Unload]:
        for endpoint in endpoints:
            endpoint.unloading = True
        return [Unload(endpoint.endpoint_id, reason) for endpoint in endpoints]

    def _position_of(self, ticket_id: str) -> Queued:
        order = self._queue.in_order()
        model = next(waiting.ask.model for waiting in order if waiting.ask.ticket_id == ticket_id)
        same_model = [waiting.ask.ticket_id for waiting in order if waiting.ask.model == model]
        return Queued(ticket_id, same_model.index(ticket_id), len(same_model))
