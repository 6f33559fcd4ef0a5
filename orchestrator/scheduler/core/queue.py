"""The wait queue: most urgent first, with aging, fairness between callers, and deadlines.

- Priority: CRITICAL before HIGH before NORMAL before LOW.
- Aging: an ask rises one level for every `aging_seconds` it has waited (up to HIGH, so aged work never
  outranks CRITICAL): nothing starves.
- Fairness: within a level, callers take turns; a caller's k-th waiting ask goes after every other
  caller's (k-1)-th, so one busy caller cannot push everyone else back.
- Deadlines: an ask whose deadline has passed is never granted; `drop_expired` hands it back to be refused.

Orders are computed when asked for: the queue is bounded (hundreds at most), and a computed order cannot
go stale as time passes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.scheduler.core.model import Ask
from services.shared.domain import Priority

DEFAULT_AGING_SECONDS = 30.0


@dataclass(frozen=True)
class Waiting:
    ask: Ask
    enqueued_at: float


class PriorityQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic, aging_seconds: float = DEFAULT_AGING_SECONDS):
        if aging_seconds <= 0:
            raise ValueError("aging_seconds must be positive")
        self._clock = clock
        self._aging_seconds = aging_seconds
        self._waiting: dict[str, Waiting] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, waiting: Waiting) -> None:
        self._waiting[waiting.ask.ticket_id] = waiting

    def remove(self, ticket_id: str) -> Waiting | None:
        return self._waiting.pop(ticket_id, None)

    def effective_priority(self, waiting: Waiting, now: float) -> Priority:
        if waiting.ask.priority >= Priority.HIGH:
            return waiting.ask.priority
        promotions = max(0, int((now - waiting.enqueued_at) // self._aging_seconds))
        return Priority(min(Priority.HIGH, waiting.ask.priority + promotions))

    def in_order(self) -> list[Waiting]:
        """Every waiting ask, in the order they would be granted."""
        now = self._clock()
        turns: Counter[tuple[Priority, str]] = Counter()
        ranked = []
        for waiting in sorted(self._waiting.values(), key=lambda w: w.enqueued_at):
            level = self.effective_priority(waiting, now)
            turn = turns[(level, waiting.ask.caller_id)]
            turns[(level, waiting.ask.caller_id)] += 1
            ranked.append((-level, turn, waiting.enqueued_at, waiting))
        return [waiting for *_, waiting in sorted(ranked, key=lambda entry: entry[:3])]

    def first_for(self, models: set[str]) -> Waiting | None:
        for waiting in self.in_order():
            if waiting.ask.model in models:
                return waiting
        return None

    def least_urgent(self) -> Waiting | None:
        """The ask that would be granted last: the one to shed first."""
        order = self.in_order()
        return order[-1] if order else None

    def drop_expired(self) -> list[Waiting]:
        now = self._clock()
        expired = [w for w in self._waiting.values() if w.ask.deadline is not None and w.ask.deadline <= now]
        for waiting in expired:
            del self._waiting[waiting.ask.ticket_id]
        return expired

    def depth_by_priority(self) -> dict[Priority, int]:
        depths = dict.fromkeys(Priority, 0)
        for waiting in self._waiting.values():
            depths[waiting.ask.priority] += 1
        return depths
