"""The wait queue: one FIFO per priority, most urgent first."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from orchestrator.scheduler.core.model import Ask, Priority


@dataclass(frozen=True)
class Waiting:
    ask: Ask
    enqueued_at: float


class PriorityQueue:
    def __init__(self) -> None:
        self._lanes: dict[Priority, deque[Waiting]] = {priority: deque() for priority in Priority}

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def push(self, waiting: Waiting) -> None:
        self._lanes[waiting.ask.priority].append(waiting)

    def remove(self, ticket_id: str) -> Waiting | None:
        for lane in self._lanes.values():
            for waiting in lane:
                if waiting.ask.ticket_id == ticket_id:
                    lane.remove(waiting)
                    return waiting
        return None

    def in_order(self) -> list[Waiting]:
        """Every waiting ask, in the order they would be granted."""
        return [waiting for priority in sorted(Priority, reverse=True) for waiting in self._lanes[priority]]

    def first_for(self, models: set[str]) -> Waiting | None:
        for waiting in self.in_order():
            if waiting.ask.model in models:
                return waiting
        return None

    def least_urgent(self) -> Waiting | None:
        """The newest ask of the lowest priority: the one to shed first."""
        for priority in sorted(Priority):
            if self._lanes[priority]:
                return self._lanes[priority][-1]
        return None

    def depth_by_priority(self) -> dict[Priority, int]:
        return {priority: len(lane) for priority, lane in self._lanes.items()}
