"""A burst of three times the mesh's capacity at once, with mixed priorities, against a memory budget.

Capacity is what the mesh can hold at once: its slots plus its queue bound. Every request of the burst is
sent at the same moment; HIGH requests are no more than the queue holds, so all of them must be served
(shedding lower ones if need be), while the excess is refused at the door. The scheduler's ledger is read
while the burst runs, and its peak is checked against the capacity it reports.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.workload import Measurement, distribution

REFUSED_AT_THE_DOOR = ("RESOURCE_EXHAUSTED:QUEUE_FULL", "RESOURCE_EXHAUSTED:MEMORY_PRESSURE_EMERGENCY")
SHED = "RESOURCE_EXHAUSTED:SHED"
# A LOW request that had started when more urgent work arrived gives its slot back (gateway/core/service.py).
RECALLED = "UNAVAILABLE:PREEMPTED"


@dataclass(frozen=True)
class LedgerUse:
    capacity_bytes: int
    reserved_bytes: int
    peak_reserved_bytes: int


@dataclass(frozen=True)
class BurstResult:
    requests: int
    capacity: int
    by_priority: dict[str, dict]
    rejected: int
    rejection_seconds: dict[str, float | None]
    shed: int
    recalled: int
    failed: int
    # The status of each failed request, so that a failure names itself.
    failures: tuple[str, ...]
    ledger_capacity_bytes: int
    ledger_peak_bytes: int
    seconds: float


def burst_priorities(capacity: int, high: int, seed: int = 11) -> list[str]:
    """3 x capacity requests: `high` HIGH, the rest split between NORMAL and LOW, in a shuffled order."""
    total = 3 * capacity
    rest = total - high
    priorities = ["HIGH"] * high + ["NORMAL"] * (rest - rest // 2) + ["LOW"] * (rest // 2)
    random.Random(seed).shuffle(priorities)
    return priorities


def run_burst(
    send: Callable[[str], Measurement], priorities: list[str], capacity: int, read_ledger: Callable[[], LedgerUse]
) -> BurstResult:
    results: list[tuple[str, Measurement]] = []
    lock, go = threading.Lock(), threading.Event()
    peak = {"reserved": 0}

    def one(priority: str) -> None:
        go.wait()
        measurement = send(priority)
        with lock:
            results.append((priority, measurement))

    threads = [threading.Thread(target=one, args=(priority,), daemon=True) for priority in priorities]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    go.set()
    while any(thread.is_alive() for thread in threads):
        peak["reserved"] = max(peak["reserved"], read_ledger().reserved_bytes)
        time.sleep(0.05)
    seconds = time.monotonic() - started
    ledger = read_ledger()
    return _summarize(results, capacity, ledger, max(peak["reserved"], ledger.peak_reserved_bytes), seconds)


def _summarize(
    results: list[tuple[str, Measurement]], capacity: int, ledger: LedgerUse, peak: int, seconds: float
) -> BurstResult:
    by_priority = {}
    for priority in ("HIGH", "NORMAL", "LOW"):
        mine = [m for p, m in results if p == priority]
        served = [m for m in mine if m.status == "ok"]
        by_priority[priority] = {
            "sent": len(mine),
            "served": len(served),
            "ttft": distribution([m.first_token for m in served if m.first_token is not None]),
        }
    refused = [m for _, m in results if m.status in REFUSED_AT_THE_DOOR]
    shed = [m for _, m in results if m.status == SHED]
    recalled = [m for _, m in results if m.status == RECALLED]
    failures = tuple(m.status for _, m in results if m.status not in ("ok", SHED, RECALLED, *REFUSED_AT_THE_DOOR))
    return BurstResult(
        requests=len(results),
        capacity=capacity,
        by_priority=by_priority,
        rejected=len(refused),
        rejection_seconds=distribution([m.total for m in refused]),
        shed=len(shed),
        recalled=len(recalled),
        failed=len(failures),
        failures=failures,
        ledger_capacity_bytes=ledger.capacity_bytes,
        ledger_peak_bytes=peak,
        seconds=seconds,
    )


def describe(result: BurstResult) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{1000 * value:.0f} ms"

    lines = [
        f"burst: {result.requests} requests at once, 3x a capacity of {result.capacity} (slots + queue bound)",
        f"{'priority':<8} {'sent':>5} {'served':>7} {'TTFT p50':>10} {'TTFT p99':>10}",
    ]
    for priority, figures in result.by_priority.items():
        ttft = figures["ttft"]
        lines.append(f"{priority:<8} {figures['sent']:>5} {figures['served']:>7} "
                     f"{ms(ttft['p50']):>10} {ms(ttft['p99']):>10}")  # fmt: skip
    rejection = result.rejection_seconds
    lines.append(f"refused at the door: {result.rejected} (p50 {ms(rejection['p50'])}, p99 {ms(rejection['p99'])}); "
                 f"shed from the queue: {result.shed}; recalled while LOW: {result.recalled}; "
                 f"failed: {result.failed} {list(result.failures) if result.failures else ''}")  # fmt: skip
    peak, capacity = result.ledger_peak_bytes / 2**20, result.ledger_capacity_bytes / 2**20
    lines.append(f"ledger peak {peak:.0f} MiB of {capacity:.0f} MiB capacity; the burst took {result.seconds:.1f}s")
    return "\n".join(lines)
