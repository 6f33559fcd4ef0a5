"""What every system is asked to do, what is measured of each request, and the statistics over them."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

# Greedy counting never ends early, so every system generates exactly max_tokens tokens.
PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"
SEED = 1234


@dataclass(frozen=True)
class Workload:
    max_tokens: int
    # Each cell is a fixed window: its clients send one request after another until it ends, and what is
    # still streaming then is cut there. A window, not a count of requests, so that a slow system is
    # measured over as long as a fast one, and its median holds still from round to round.
    cell_seconds: float
    concurrencies: tuple[int, ...]
    rounds: int


QUICK = Workload(max_tokens=24, cell_seconds=2.0, concurrencies=(1, 4, 16), rounds=1)
FULL = Workload(max_tokens=64, cell_seconds=3.5, concurrencies=(1, 4, 16), rounds=3)
# meshserve on vLLM against vllm serve, on the tiny test Llama. vLLM's CPU build takes about two seconds to
# its first token here, so its cells are longer, and its answers short enough that most finish inside one
# (an OpenAI stream's finished requests say how many tokens its events carried); two rounds keep its share
# of the run.
FULL_VLLM = Workload(max_tokens=48, cell_seconds=10.0, concurrencies=(4, 16), rounds=2)

OK = "ok"
# Still streaming when its cell's window ended, and cut there by its client: not a failure.
CUT = "cut"


@dataclass
class Measurement:
    """One request, as its client saw it; times in seconds from when it was sent (`sent_at`, monotonic)."""

    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)
    total: float = 0.0
    tokens: int = 0
    status: str = OK
    sent_at: float = 0.0

    def check_length(self, expected_tokens: int) -> Measurement:
        """An answer that ended shorter than asked for is a failure, not throughput."""
        if self.status == OK and self.tokens < expected_tokens:
            self.status = "truncated"
        return self

    @property
    def answered(self) -> bool:
        return self.status in (OK, CUT)

    def times_by(self, end: float) -> list[float]:
        """Its token times that fell at or before `end` (monotonic)."""
        return [at for at in self.token_times if self.sent_at + at <= end]


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def distribution(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p90": percentile(values, 0.9), "p99": percentile(values, 0.99)}


@dataclass(frozen=True)
class RunSummary:
    """One system at one concurrency, over one run."""

    system: str
    concurrency: int
    ttft: dict[str, float | None]
    inter_token: dict[str, float | None]
    end_to_end: dict[str, float | None]
    output_tokens_per_second: float
    requests_per_second: float
    tokens: int
    failures: int


def summarize(system: str, concurrency: int, results: list[Measurement], window: tuple[float, float]) -> RunSummary:
    """One cell's figures: tokens counted only where they arrived inside its window (monotonic start and
    end), times to first token of every request sent, whole-request latency of those that finished."""
    start, end = window
    answered = [m for m in results if m.answered]
    inside = [m.times_by(end) for m in answered]
    finished = [m for m in answered if m.status == OK and m.sent_at + m.total <= end]
    per_arrival = tokens_per_arrival(answered)
    tokens = round(sum(per_arrival(m) * len(times) for m, times in zip(answered, inside, strict=True)))
    gaps = [later - earlier for times in inside for earlier, later in zip(times, times[1:], strict=False)]
    seconds = end - start
    return RunSummary(
        system=system,
        concurrency=concurrency,
        # Every request was sent inside the window; one still queued at its end is cut at its first token,
        # which is still its time to first token: leaving it out would keep only the lucky waits.
        ttft=distribution([m.first_token for m in answered if m.first_token is not None]),
        inter_token=distribution(gaps),
        end_to_end=distribution([m.total for m in finished]),
        output_tokens_per_second=tokens / seconds if seconds else 0.0,
        requests_per_second=len(finished) / seconds if seconds else 0.0,
        tokens=tokens,
        failures=len(results) - len(answered),
    )


def tokens_per_arrival(answered: list[Measurement]) -> Callable[[Measurement], float]:
    """How many tokens each recorded arrival of a request stands for. A client that reads token counts
    (gRPC, REST, the engine) records one arrival a token: 1. An OpenAI stream's event may carry several
    tokens (meshserve sends what built up as one event) or a token no event shows; a request that finished
    says in its usage how many it got, so its events are weighed by that, and a request cut at the window's
    end by what the finished ones of the same cell carried an event."""
    finished = [m for m in answered if m.status == OK and m.tokens and m.token_times]
    arrivals = sum(len(m.token_times) for m in finished)
    cell_ratio = sum(m.tokens for m in finished) / arrivals if arrivals else 1.0

    def per_arrival(m: Measurement) -> float:
        if m.status == OK and m.tokens and m.token_times:
            return m.tokens / len(m.token_times)
        return cell_ratio

    return per_arrival


def median_of(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None
