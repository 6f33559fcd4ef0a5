"""What every system is asked to do, what is measured of each request, and the statistics over them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# Greedy counting never ends early, so every system generates exactly max_tokens tokens.
PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"
SEED = 1234


@dataclass(frozen=True)
class Workload:
    max_tokens: int
    requests_per_client: int
    concurrencies: tuple[int, ...]
    rounds: int


QUICK = Workload(max_tokens=24, requests_per_client=2, concurrencies=(1, 4, 16), rounds=2)
FULL = Workload(max_tokens=64, requests_per_client=2, concurrencies=(1, 4, 16), rounds=3)
# meshserve on vLLM against vllm serve, on the tiny test Llama: fast noise, so more requests a client.
QUICK_VLLM = Workload(max_tokens=64, requests_per_client=2, concurrencies=(4, 16), rounds=2)
FULL_VLLM = Workload(max_tokens=128, requests_per_client=4, concurrencies=(4, 16), rounds=3)


@dataclass
class Measurement:
    """One request, as its client saw it; times in seconds from when it was sent."""

    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)
    total: float = 0.0
    tokens: int = 0
    status: str = "ok"

    def check_length(self, expected_tokens: int) -> Measurement:
        """An answer shorter than asked for (a cut-off stream) is a failure, not throughput."""
        if self.status == "ok" and self.tokens < expected_tokens:
            self.status = "truncated"
        return self

    @property
    def inter_token(self) -> list[float]:
        times = self.token_times
        return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


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


def summarize(system: str, concurrency: int, results: list[Measurement], wall_seconds: float) -> RunSummary:
    done = [m for m in results if m.status == "ok"]
    tokens = sum(m.tokens for m in done)
    return RunSummary(
        system=system,
        concurrency=concurrency,
        ttft=distribution([m.first_token for m in done if m.first_token is not None]),
        inter_token=distribution([gap for m in done for gap in m.inter_token]),
        end_to_end=distribution([m.total for m in done]),
        output_tokens_per_second=tokens / wall_seconds if wall_seconds else 0.0,
        requests_per_second=len(done) / wall_seconds if wall_seconds else 0.0,
        tokens=tokens,
        failures=len(results) - len(done),
    )


def median_of(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None
