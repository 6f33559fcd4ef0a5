"""What the gateway tells operators about each request: GenAI attributes on its span, the latency and
token metrics a client experiences, and one log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from opentelemetry.trace import Span

from gateway.core.service import GatewayChunk, GatewayRequest
from services.shared.errors import MeshError
from telemetry.genai import operation_name, request_attributes, response_attributes
from telemetry.metrics import GenerationTimer

log = logging.getLogger("gateway.requests")

PROVIDER = "meshserve"
# Metric labels name configured models only, so a client cannot grow the label set at will.
UNKNOWN_MODEL_LABEL = "unknown"


async def observed_generation(
    span: Span, request: GatewayRequest, model: str, chunks: AsyncIterator[GatewayChunk]
) -> AsyncIterator[GatewayChunk]:
    _describe_request(span, request, model)
    timer = GenerationTimer(model)
    outcome = "error"
    try:
        async with aclosing(chunks):
            async for item in chunks:
                if item.chunk.token_ids or item.chunk.text:
                    timer.token_seen()
                _describe_completion(span, item, request, timer)
                yield item
        outcome = "ok"
    except MeshError as error:
        outcome = error.reason.lower()
        raise
    except (asyncio.CancelledError, GeneratorExit):
        outcome = "cancelled"
        raise
    finally:
        timer.finish(outcome)


def _describe_request(span: Span, request: GatewayRequest, model: str) -> None:
    sampling = request.generation.sampling
    operation = operation_name(bool(request.generation.messages))
    span.set_attributes(
        request_attributes(operation, PROVIDER, model, sampling.max_tokens, sampling.temperature, sampling.top_p)
    )
    span.set_attribute("meshserve.priority", request.priority.name)
    if request.caller_id:
        span.set_attribute("meshserve.caller", request.caller_id)


def _describe_completion(span: Span, item: GatewayChunk, request: GatewayRequest, timer: GenerationTimer) -> None:
    chunk = item.chunk
    if chunk.finish_reason is None or chunk.usage is None:
        return
    usage = chunk.usage
    timer.input_tokens, timer.output_tokens = usage.input_tokens, usage.output_tokens
    span.set_attributes(
        response_attributes(item.model, chunk.finish_reason.value, usage.input_tokens, usage.output_tokens)
    )
    summary = f"{usage.output_tokens} tokens for {usage.input_tokens} prompt tokens on {item.model}"
    log.info("generated %s (%s, priority %s)", summary, chunk.finish_reason.value, request.priority.name)
