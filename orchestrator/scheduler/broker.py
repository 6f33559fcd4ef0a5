"""The async shell around the scheduler's state machine.

Each waiting ask has a mailbox; when the state machine grants, sheds or moves an ask, the broker posts
the news there. Unloads go to the residency keeper, which reports back when the engine has let go.
Nothing here decides anything: it only delivers what SlotScheduler returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from orchestrator.scheduler.core.model import Ask, Expired, Grant, Queued, Release, Shed, Unload
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
        self._on_unload: Callable[[Unload], None] = lambda unload: log.warning("no one to unload %s", unload)

    @property
    def core(self) -> SlotScheduler:
        return self._core

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
            self._deliver(self._core.tick())

    def release(self, slot_id: str, release: Release | None = None) -> None:
        self._deliver(self._core.release(slot_id, release))

    def apply(self, change: Callable[[SlotScheduler], list[Update]]) -> None:
        """Runs one state change on the core (a reading, a health change, an unload's end) and delivers its news."""
        self._deliver(change(self._core))

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
