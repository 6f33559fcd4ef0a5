"""The async shell around the scheduler's state machine.

Each waiting ask has a mailbox; when the state machine grants, sheds or moves an ask, the broker posts
the news there. Each held slot has a news queue: a recall, when more urgent work takes a LOW slot back,
and a loss, when the slot's endpoint leaves the mesh.
Unloads go to the residency keeper, which reports back when the engine has let go. Nothing here decides
anything: it only delivers what SlotScheduler returns.

The state machine is private. The watchers, the residency keeper, the servicer and the state report
reach it only through the named operations below, so every change to it passes through _deliver and
no news of a change is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from orchestrator.scheduler.core.model import (
    Ask,
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
from orchestrator.scheduler.core.pressure import PressureLevel
from orchestrator.scheduler.core.scheduler import SlotScheduler, Update
from services.shared.errors import ErrorKind, MeshError, resource_exhausted

log = logging.getLogger(__name__)

# How often deadlines, recoveries and keep-alives are checked between other events.
TICK_SECONDS = 0.1


class SlotBroker:
    def __init__(self, core: SlotScheduler) -> None:
        self._core = core
        self._mailboxes: dict[str, asyncio.Queue[Update]] = {}
        self._last_position: dict[str, int] = {}
        self._slot_news: dict[str, asyncio.Queue[Recall | Lost]] = {}
        self._on_unload: Callable[[Unload], None] = lambda unload: log.warning("no one to unload %s", unload)

    def send_unloads_to(self, on_unload: Callable[[Unload], None]) -> None:
        self._on_unload = on_unload

    async def acquire(self, ask: Ask) -> AsyncIterator[Queued | Grant]:
        """Yields queue positions while the ask waits, then its grant. Refusals raise MeshError."""
        decision, others = self._core.submit(ask)
        mailbox: asyncio.Queue[Update] = asyncio.Queue()
        if isinstance(decision, Queued):
            self._mailboxes[ask.ticket_id] = mailbox
            self._last_position[ask.ticket_id] = decision.position
        self._deliver(others)
        if isinstance(decision, Grant):
            yield decision
            return
        granted = False
        try:
            yield decision
            while not granted:
                update = await mailbox.get()
                if isinstance(update, Shed):
                    raise resource_exhausted(
                        "SHED", "a more urgent request took this one's place in the queue", update.retry_after_seconds
                    )
                if isinstance(update, Expired):
                    raise MeshError(
                        "DEADLINE_EXCEEDED_IN_QUEUE",
                        "the request's deadline passed while it waited for a slot",
                        kind=ErrorKind.DEADLINE_EXCEEDED,
                    )
                granted = isinstance(update, Grant)
                yield update  # type: ignore[misc]
        finally:
            self._leave(ask.ticket_id, mailbox, granted)

    async def tick_forever(self) -> None:
        """Runs for the scheduler's life: deadlines, recoveries from emergencies, and idle unloads."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.tick()

    def tick(self) -> None:
        """Drops asks whose deadline passed, ends emergencies that are over, and unloads idle models."""
        self._deliver(self._core.tick())

    def release(self, slot_id: str, release: Release | None = None) -> None:
        self._slot_news.pop(slot_id, None)
        self._deliver(self._core.release(slot_id, release))

    def slot_news(self, slot_id: str) -> asyncio.Queue[Recall | Lost]:
        """What befalls a held slot: recalled (stop and release it) or lost (its endpoint has gone)."""
        return self._slot_news.setdefault(slot_id, asyncio.Queue())

    def endpoint_joined(self, spec: EndpointSpec, running_requests: int) -> None:
        """A registered endpoint, with what its engine already runs; it takes work once its health says so."""
        self._deliver(self._core.add_endpoint(spec, running_requests))

    def endpoint_left(self, endpoint_id: str, reason: str) -> None:
        """A registered endpoint went away or silent: it gets no more work, and its held slots are lost."""
        self._deliver(self._core.remove_endpoint(endpoint_id, reason))

    def endpoint_running(self, endpoint_id: str, running_requests: int) -> None:
        """The engine's own count of what it runs, from its heartbeat."""
        self._deliver(self._core.endpoint_activity(endpoint_id, running_requests))

    def devices_silent(self, device_ids: Sequence[str]) -> None:
        """Their monitor went quiet: nothing new starts on them until it reads them again."""
        self._deliver(self._core.devices_silent(device_ids))

    def endpoint_serving(self, endpoint_id: str, serving: bool) -> None:
        """The endpoint's health changed: a serving one takes asks, one that is not gets none."""
        self._deliver(self._core.set_available(endpoint_id, serving))

    def endpoint_described(self, endpoint_id: str, footprint: Footprint, resident: bool) -> None:
        """The endpoint reported what its model costs and whether it is loaded."""
        self._deliver(self._core.describe(endpoint_id, footprint, resident))

    def device_observed(
        self, device_id: str, used_bytes: int, total_bytes: int, temperature_celsius: float | None
    ) -> PressureLevel | None:
        """A device reading; returns the device's pressure level if the reading changed it, else None."""
        before = self._core.pressure_level(device_id)
        self._deliver(self._core.observe(device_id, used_bytes, total_bytes, temperature_celsius))
        after = self._core.pressure_level(device_id)
        return after if after is not before else None

    def model_unloaded(self, endpoint_id: str) -> None:
        self._deliver(self._core.unloaded(endpoint_id))

    def unload_failed(self, endpoint_id: str) -> None:
        self._deliver(self._core.unload_failed(endpoint_id))

    def snapshot(self) -> SchedulerSnapshot:
        """A copy of the state for reports; changing it changes nothing here."""
        return self._core.snapshot()

    def _leave(self, ticket_id: str, mailbox: asyncio.Queue[Update], granted: bool) -> None:
        self._mailboxes.pop(ticket_id, None)
        self._last_position.pop(ticket_id, None)
        if granted:
            return
        # The caller left while waiting. A grant may already sit unread in its mailbox: give it back.
        while not mailbox.empty():
            update = mailbox.get_nowait()
            if isinstance(update, Grant):
                self.release(update.slot_id)
                return
        if self._core.withdraw(ticket_id):
            self._deliver([])

    def _deliver(self, updates: Sequence[Update]) -> None:
        for update in updates:
            if isinstance(update, Unload):
                self._on_unload(update)
                continue
            if isinstance(update, Recall | Lost):
                self.slot_news(update.slot_id).put_nowait(update)
                continue
            mailbox = self._mailboxes.get(update.ticket_id)
            if mailbox is not None:
                mailbox.put_nowait(update)
            elif isinstance(update, Grant):
                log.warning("grant for %s, which has gone; releasing %s", update.ticket_id, update.slot_id)
                self.release(update.slot_id)
        self._announce_positions()

    def _announce_positions(self) -> None:
        for queued in self._core.positions():
            mailbox = self._mailboxes.get(queued.ticket_id)
            if mailbox is not None and self._last_position.get(queued.ticket_id) != queued.position:
                self._last_position[queued.ticket_id] = queued.position
                mailbox.put_nowait(queued)
