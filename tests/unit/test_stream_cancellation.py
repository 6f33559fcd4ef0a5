"""A streaming handler closed at a yield (its caller went away) is counted and traced as cancelled."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.shared.error_interceptor import _wrap_stream
from telemetry.metrics import RPC_REQUESTS

METHOD = "/test.v1.Streams/Forever"


class IdleContext:
    """The one thing the interceptor asks a context when a call ends early: is its deadline gone?"""

    def time_remaining(self) -> float | None:
        return None


async def forever(request: object, context: object) -> AsyncIterator[str]:
    while True:
        yield "token"


def cancelled_count() -> float:
    return RPC_REQUESTS.labels(METHOD, "CANCELLED")._value.get()


async def test_a_handler_closed_while_it_waits_at_a_yield_counts_as_cancelled() -> None:
    before = cancelled_count()
    handler = _wrap_stream(forever, METHOD, streaming_requests=False)(object(), IdleContext())
    assert await anext(handler) == "token"
    await handler.aclose()
    assert cancelled_count() == before + 1
    assert RPC_REQUESTS.labels(METHOD, "OK")._value.get() == 0
