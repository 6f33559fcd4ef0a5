"""What the scheduler tells operators about each ask: a span for the queue wait, one for the placement
decision, and a log line at each step, all inside the caller's trace."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from opentelemetry.trace import Status, StatusCode

from orchestrator.scheduler.core.model import Ask, Grant, Queued
from orchestrator.scheduler.core.pressure import PressureLevel
from orchestrator.scheduler.metrics import ADMISSIONS, QUEUE_WAIT
from services.shared.errors import MeshError
from telemetry.spans import ERROR_TYPE, record_cancellation, tracer

log = logging.getLogger("orchestrator.scheduler.requests")


async def traced_acquire(ask: Ask, updates: AsyncIterator[Queued | Grant]) -> AsyncIterator[Queued | Grant]:
    attributes = {"meshserve.priority": ask.priority.name, "gen_ai.request.model": ask.model}
    with tracer.start_as_current_span("scheduler.queue", attributes=attributes) as span:
        span.set_attribute("meshserve.queue.initial_position", 0)
        first = True
        try:
            # Closed explicitly: the broker's cleanup (withdraw or release) must run now, not at collection.
            async with aclosing(updates):
                async for update in updates:
                    if first:
                        ADMISSIONS.labels("queued" if isinstance(update, Queued) else "admitted", "").inc()
                    if isinstance(update, Queued):
                        _queued(span, update, first)
                    else:
                        span.set_attribute("meshserve.queue.wait_seconds", update.queue_wait_seconds)
                        QUEUE_WAIT.labels(ask.priority.name).observe(update.queue_wait_seconds)
                        _place(ask, update)
                    first = False
                    yield update
        except MeshError as refusal:
            ADMISSIONS.labels("rejected", refusal.reason).inc()
            span.set_attribute(ERROR_TYPE, refusal.reason)
            span.set_status(Status(StatusCode.ERROR, refusal.message))
            log.info("refused an ask for %s: %s", ask.model, refusal)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            if first:
                record_cancellation(span, deadline_passed=False)
                log.info("the caller left while waiting for %s", ask.model)
            raise


def _queued(span, queued: Queued, first: bool) -> None:
    event = {"meshserve.queue.position": queued.position, "meshserve.queue.depth": queued.depth}
    span.add_event("queue_position", event)
    if first:
        span.set_attribute("meshserve.queue.initial_position", queued.position)
    log.info("queued at position %d of %d", queued.position, queued.depth)


def _place(ask: Ask, grant: Grant) -> None:
    endpoint = grant.endpoint
    attributes = {
        "meshserve.endpoint.id": endpoint.endpoint_id,
        "meshserve.endpoint.address": endpoint.address,
        "meshserve.slot.id": grant.slot_id,
        "gen_ai.request.model": endpoint.model,
        "meshserve.pressure.level": PressureLevel(grant.pressure_level).name,
        "meshserve.caller": ask.caller_id,
    }
    with tracer.start_as_current_span("scheduler.placement", attributes=attributes):
        log.info(
            "granted %s to %s at %s after %.3fs in the queue at pressure %s",
            grant.slot_id,
            ask.caller_id or "an unnamed caller",
            ask.priority.name,
            grant.queue_wait_seconds,
            PressureLevel(grant.pressure_level).name,
        )
