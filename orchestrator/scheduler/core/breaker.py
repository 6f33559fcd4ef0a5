"""Per-endpoint health from the outcomes of its requests: a latency average, a failure rate, and a circuit breaker.

The breaker opens after a run of consecutive failures or a high failure rate over the recent window, so a
failing endpoint stops getting work. Once its cool-down passes it is half open: one request goes through
as a probe. A successful probe closes it; a failed one opens it again for twice as long (up to a cap).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    window: int = 20
    min_samples: int = 5
    failure_rate: float = 0.5
    consecutive_failures: int = 3
    open_seconds: float = 5.0
    max_open_seconds: float = 60.0
    # Weight of the newest time to first token in the running average.
    latency_smoothing: float = 0.2


class EndpointHealthRecord:
    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self._policy = policy or BreakerPolicy()
        self._outcomes: deque[bool] = deque(maxlen=self._policy.window)
        self._consecutive_failures = 0
        self._opened_for = self._policy.open_seconds
        self._retry_at: float | None = None
        self._probe_in_flight = False
        self.latency_ema_seconds: float | None = None

    def state(self, now: float) -> BreakerState:
        if self._retry_at is None:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self._retry_at else BreakerState.HALF_OPEN

    def allows(self, now: float) -> bool:
        state = self.state(now)
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probe_in_flight)

    def started(self, now: float) -> None:
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probe_in_flight = True

    @property
    def failure_rate(self) -> float:
        return self._outcomes.count(False) / len(self._outcomes) if self._outcomes else 0.0

    def succeeded(self, now: float, first_token_seconds: float | None) -> None:
        if first_token_seconds is not None:
            if self.latency_ema_seconds is None:
                self.latency_ema_seconds = first_token_seconds
            else:
                self.latency_ema_seconds += self._policy.latency_smoothing * (
                    first_token_seconds - self.latency_ema_seconds
                )
        self._outcomes.append(True)
        self._consecutive_failures = 0
        if self._probe_in_flight or self.state(now) is not BreakerState.CLOSED:
            self._close()

    def failed(self, now: float) -> None:
        self._outcomes.append(False)
        self._consecutive_failures += 1
        if self._probe_in_flight:
            self._probe_in_flight = False
            self._open(now, min(2 * self._opened_for, self._policy.max_open_seconds))
        elif self.state(now) is BreakerState.CLOSED and self._should_open():
            self._open(now, self._policy.open_seconds)

    def abandoned(self) -> None:
        """The request ended without telling whether the endpoint works (a cancel): a probe may go again."""
        self._probe_in_flight = False

    def _should_open(self) -> bool:
        if self._consecutive_failures >= self._policy.consecutive_failures:
            return True
        return len(self._outcomes) >= self._policy.min_samples and self.failure_rate >= self._policy.failure_rate

    def _open(self, now: float, seconds: float) -> None:
        self._opened_for = seconds
        self._retry_at = now + seconds

    def _close(self) -> None:
        self._retry_at = None
        self._probe_in_flight = False
        self._opened_for = self._policy.open_seconds
        self._outcomes.clear()
