"""What each caller may use, held exactly in one place: requests and tokens per minute, requests at once.

The scheduler is the one place every gateway replica asks for slots, so limits kept here hold across
replicas. Windows slide: a request counts for the 60 seconds after it was asked for; tokens (prompt plus
completion, as the endpoint reported them) count for the 60 seconds after the request ended.
Pure: time comes from the caller.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from services.shared.errors import MeshError, resource_exhausted
from services.shared.identity import CallerLimits

WINDOW_SECONDS = 60.0
# A caller at its concurrency cap is told to come back after about one request's time.
_CONCURRENCY_RETRY_SECONDS = 1.0


@dataclass
class _Usage:
    requests: deque[float] = field(default_factory=deque)
    # (when the request ended, tokens it used)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    in_flight: int = 0

    def forget_before(self, cutoff: float) -> None:
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= cutoff:
            self.tokens.popleft()

    @property
    def tokens_used(self) -> int:
        return sum(count for _, count in self.tokens)


@dataclass(frozen=True)
class RateStatus:
    """What the x-ratelimit-* headers say: each limit, what is left of it, and when all of it is back."""

    limit_requests: int | None
    remaining_requests: int | None
    reset_requests_seconds: float
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_seconds: float

    def as_metadata(self) -> dict[str, str]:
        """As ErrorInfo metadata and response headers (OpenAI's names), for the limits there are."""
        fields: dict[str, str] = {}
        if self.limit_requests is not None:
            fields["x-ratelimit-limit-requests"] = str(self.limit_requests)
            fields["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            fields["x-ratelimit-reset-requests"] = _duration(self.reset_requests_seconds)
        if self.limit_tokens is not None:
            fields["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            fields["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            fields["x-ratelimit-reset-tokens"] = _duration(self.reset_tokens_seconds)
        return fields


class CallerBook:
    def __init__(self) -> None:
        self._usage: dict[str, _Usage] = {}

    def check(self, caller: str, limits: CallerLimits, now: float) -> RateStatus:
        """Raises RATE_LIMITED (RESOURCE_EXHAUSTED) when the caller may not start another request now."""
        usage = self._current(caller, now)
        status = self._status(usage, limits, now)
        if limits.requests_per_minute is not None and len(usage.requests) >= limits.requests_per_minute:
            raise _limited("requests", f"{limits.requests_per_minute} requests per minute", status,
                           status.reset_requests_seconds)  # fmt: skip
        if limits.tokens_per_minute is not None and usage.tokens_used >= limits.tokens_per_minute:
            raise _limited("tokens", f"{limits.tokens_per_minute} tokens per minute", status,
                           status.reset_tokens_seconds)  # fmt: skip
        if limits.max_concurrent is not None and usage.in_flight >= limits.max_concurrent:
            raise _limited("concurrency", f"{limits.max_concurrent} requests at once", status,
                           _CONCURRENCY_RETRY_SECONDS)  # fmt: skip
        return status

    def started(self, caller: str, now: float) -> None:
        usage = self._current(caller, now)
        usage.requests.append(now)
        usage.in_flight += 1

    def ended(self, caller: str, tokens: int, now: float) -> None:
        """A request of the caller's left, served or not; `tokens` is what it used."""
        usage = self._current(caller, now)
        usage.in_flight = max(0, usage.in_flight - 1)
        if tokens > 0:
            usage.tokens.append((now, tokens))

    def forget_idle(self, now: float) -> None:
        """Drops callers with nothing in flight and nothing left in their windows, so the book stays small."""
        for caller in [caller for caller, usage in self._usage.items() if not usage.in_flight]:
            usage = self._current(caller, now)
            if not usage.requests and not usage.tokens:
                del self._usage[caller]

    def status(self, caller: str, limits: CallerLimits, now: float) -> RateStatus:
        return self._status(self._current(caller, now), limits, now)

    def _current(self, caller: str, now: float) -> _Usage:
        usage = self._usage.setdefault(caller, _Usage())
        usage.forget_before(now - WINDOW_SECONDS)
        return usage

    @staticmethod
    def _status(usage: _Usage, limits: CallerLimits, now: float) -> RateStatus:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        reset_requests = usage.requests[0] + WINDOW_SECONDS - now if usage.requests else 0.0
        reset_tokens = usage.tokens[0][0] + WINDOW_SECONDS - now if usage.tokens else 0.0
        return RateStatus(
            rpm, None if rpm is None else max(0, rpm - len(usage.requests)), max(0.0, reset_requests),
            tpm, None if tpm is None else max(0, tpm - usage.tokens_used), max(0.0, reset_tokens),
        )  # fmt: skip


def _limited(limit: str, what: str, status: RateStatus, retry_after: float) -> MeshError:
    return resource_exhausted(
        "RATE_LIMITED",
        f"this credential's limit of {what} is reached",
        retry_after_seconds=max(retry_after, 0.05),
        limit=limit,
        **status.as_metadata(),
    )


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '1s', '6m0s', '0.5s'."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
