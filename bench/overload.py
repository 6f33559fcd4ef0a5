"""Offered load past capacity, with mixed priorities and a deadline: admission against an unbounded queue."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from bench.workload import Measurement, distribution

# A quarter HIGH, half NORMAL, a quarter LOW.
PRIORITY_MIX = ("HIGH", "NORMAL", "LOW", "NORMAL")


@dataclass(frozen=True)
class OverloadResult:
    system: str
    offered_per_second: float
    requests: int
    high_ttft: dict[str, float | None]
    high_answered_share: float
    answered_within_deadline_share: float
    # Refused at the door (the queue was full): answered at once, with a retry delay.
    rejected: int
    rejection_seconds: dict[str, float | None]
    # Pushed out of the queue by more urgent work, after waiting.
    shed: int


def offer_load(client, rate: float, duration: float, deadline: float, max_tokens: int) -> OverloadResult:
    """Sends requests at a fixed rate for `duration` seconds, each with the deadline, and waits for all."""
    results: list[tuple[str, Measurement]] = []
    lock, threads = threading.Lock(), []

    def send(priority: str) -> None:
        measurement = client.stream(max_tokens, priority, deadline).check_length(max_tokens)
        with lock:
            results.append((priority, measurement))

    started = time.monotonic()
    for index, priority in zip(itertools.count(), itertools.cycle(PRIORITY_MIX), strict=False):
        due = started + index / rate
        if due - started >= duration:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        thread = threading.Thread(target=send, args=(priority,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(deadline + 30)
    return _summarize(client.name, rate, results, deadline)


def _summarize(system: str, rate: float, results: list[tuple[str, Measurement]], deadline: float) -> OverloadResult:
    high = [m for priority, m in results if priority == "HIGH"]
    answered = [m for _, m in results if m.status == "ok" and m.total <= deadline]
    rejected = [m for _, m in results if m.status in ("RESOURCE_EXHAUSTED:QUEUE_FULL", "HTTP 429")]
    shed = [m for _, m in results if m.status == "RESOURCE_EXHAUSTED:SHED"]
    return OverloadResult(
        system=system,
        offered_per_second=rate,
        requests=len(results),
        high_ttft=distribution([m.first_token for m in high if m.first_token is not None]),
        high_answered_share=sum(1 for m in high if m.status == "ok" and m.total <= deadline) / max(1, len(high)),
        answered_within_deadline_share=len(answered) / max(1, len(results)),
        rejected=len(rejected),
        rejection_seconds=distribution([m.total for m in rejected]),
        shed=len(shed),
    )
