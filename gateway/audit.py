"""One audit record for every call the gateway serves: who asked (the identity the edge established), for
what, how it ended, and what it used. Never the prompt or the completion.

Calls refused at the edge never get here; the authorization service audits those.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass

from opentelemetry import trace

from gateway.core.service import GatewayChunk, GatewayRequest
from services.shared.audit_log import AuditLog
from services.shared.errors import MeshError, http_status_of
from services.shared.identity import Identity
from services.store.records import AuditRecord
from telemetry.spans import trace_id_of

# nginx's status for a client that went away first, so the log tells a cancel from a failure.
CLIENT_CLOSED = 499


@dataclass
class _Call:
    identity: Identity
    arrived: float
    started: float
    # Taken when the call starts: a generation may be closed from another task, under another span.
    trace_id: str = ""
    model: str = ""
    priority: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


class RequestAudit:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

    async def generation(
        self, identity: Identity, request: GatewayRequest, chunks: AsyncIterator[GatewayChunk]
    ) -> AsyncIterator[GatewayChunk]:
        # The priority it is served at: the scheduler caps an ask at the credential's ceiling.
        priority = min(request.priority, identity.limits.max_priority).name
        call = _Call(identity, time.time(), time.monotonic(), _trace_id(), request.model, priority)
        outcome, status, reason = "error", 500, "INTERNAL"
        try:
            async with aclosing(chunks):
                async for item in chunks:
                    call.model = item.model
                    if item.chunk.usage is not None:
                        call.input_tokens = item.chunk.usage.input_tokens
                        call.output_tokens = item.chunk.usage.output_tokens
                    yield item
            outcome, status, reason = "ok", 200, ""
        except MeshError as error:
            outcome, status, reason = "refused", http_status_of(error), error.reason
            raise
        except (asyncio.CancelledError, GeneratorExit):
            outcome, status, reason = "cancelled", CLIENT_CLOSED, "CLIENT_CLOSED"
            raise
        finally:
            self._log.record(_record(call, outcome, status, reason))

    def served(self, identity: Identity) -> None:
        """Audits a request answered in full by a service that holds no call open, such as the Batch API."""
        call = _Call(identity, time.time(), time.monotonic(), _trace_id())
        self._log.record(_record(call, "ok", 200, ""))

    def refused(self, identity: Identity, status: int, reason: str) -> None:
        """Audits a request refused before any work, such as a body the OpenAI front cannot read."""
        call = _Call(identity, time.time(), time.monotonic(), _trace_id())
        self._log.record(_record(call, "refused", status, reason))

    @contextmanager
    def call(self, identity: Identity, *, refusals_only: bool = False) -> Iterator[None]:
        """Audits a unary call however it ends; with `refusals_only`, only its refusal (a generation's start,
        whose own record comes from generation())."""
        call = _Call(identity, time.time(), time.monotonic(), _trace_id())
        try:
            yield
        except MeshError as error:
            self._log.record(_record(call, "refused", http_status_of(error), error.reason))
            raise
        except Exception:
            self._log.record(_record(call, "error", 500, "INTERNAL"))
            raise
        if not refusals_only:
            self._log.record(_record(call, "ok", 200, ""))


def _record(call: _Call, outcome: str, status: int, reason: str) -> AuditRecord:
    return AuditRecord(
        at=call.arrived,
        subject=call.identity.subject,
        surface=call.identity.surface.value,
        route=call.identity.route,
        model=call.model,
        priority=call.priority,
        outcome=outcome,
        status=status,
        reason=reason,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        latency_ms=(time.monotonic() - call.started) * 1000,
        trace_id=call.trace_id,
    )


def _trace_id() -> str:
    return trace_id_of(trace.get_current_span())
