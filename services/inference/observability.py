"""What the inference service tells operators about each generation: a GenAI span with prompt processing
and decoding as children, a first-token event, and one log line, all inside the caller's trace."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from services.shared.domain import GenerationChunk, GenerationRequest
from services.shared.errors import MeshError
from telemetry.genai import (
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    operation_name,
    request_attributes,
    response_attributes,
)
from telemetry.metrics import GenerationTimer
from telemetry.spans import ERROR_TYPE, record_cancellation, tracer

log = logging.getLogger("services.inference.requests")

PROVIDER = "llama.cpp"


async def traced_generation(
    request: GenerationRequest, model: str, chunks: AsyncIterator[GenerationChunk], record_content: bool
) -> AsyncIterator[GenerationChunk]:
    operation = operation_name(bool(request.messages))
    sampling = request.sampling
    attributes = request_attributes(
        operation, PROVIDER, model, sampling.max_tokens, sampling.temperature, sampling.top_p
    )
    # Not the current span: this generator is closed from whichever task notices the caller left, and a
    # context attached in one task cannot be detached in another. Children name their parent instead.
    span = tracer.start_span(f"{operation} {model}", attributes=attributes)
    if record_content:
        span.set_attribute(INPUT_MESSAGES, _input_messages(request))
    phases = _Phases(span)
    timer = GenerationTimer(model)
    output: list[str] = []
    outcome = "error"
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                if phases.saw(chunk):
                    timer.token_seen()
                if record_content:
                    output.append(chunk.text)
                if chunk.usage is not None and chunk.finish_reason is not None:
                    timer.input_tokens, timer.output_tokens = chunk.usage.input_tokens, chunk.usage.output_tokens
                    _finished(span, model, chunk)
                yield chunk
        outcome = "ok"
    except MeshError as refusal:
        outcome = refusal.reason.lower()
        span.set_attribute(ERROR_TYPE, refusal.reason)
        span.set_status(Status(StatusCode.ERROR, refusal.message))
        raise
    except (asyncio.CancelledError, GeneratorExit):
        outcome = "cancelled"
        record_cancellation(span, deadline_passed=False)
        log.info("generation stopped: the caller went away")
        raise
    except Exception as failure:
        span.record_exception(failure)
        span.set_status(Status(StatusCode.ERROR, str(failure)))
        raise
    finally:
        phases.end()
        timer.finish(outcome)
        if record_content:
            span.set_attribute(OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": "".join(output)}]))
        span.end()


class _Phases:
    """Prompt processing runs until the first token; decoding from there to the end."""

    def __init__(self, parent: Span) -> None:
        self._parent = parent
        self._context = trace.set_span_in_context(parent)
        self._started = time.monotonic()
        self._current = tracer.start_span("prompt_processing", context=self._context)
        self._decoding = False

    def saw(self, chunk: GenerationChunk) -> bool:
        """Moves from prompt processing to decoding at the first token; says whether this was it."""
        if self._decoding or not chunk.token_ids:
            return False
        time_to_first_token = time.monotonic() - self._started
        self._current.end()
        self._parent.add_event("first_token", {"meshserve.time_to_first_token_seconds": time_to_first_token})
        self._current = tracer.start_span("decode", context=self._context)
        self._decoding = True
        return True

    def end(self) -> None:
        self._current.end()


def _finished(span: Span, model: str, chunk: GenerationChunk) -> None:
    assert chunk.usage is not None and chunk.finish_reason is not None
    usage = chunk.usage
    span.set_attributes(response_attributes(model, chunk.finish_reason.value, usage.input_tokens, usage.output_tokens))
    log.info(
        "generated %d tokens for %d prompt tokens (%s)",
        usage.output_tokens,
        usage.input_tokens,
        chunk.finish_reason.value,
    )


def _input_messages(request: GenerationRequest) -> str:
    if request.messages:
        return json.dumps([{"role": m.role.value, "content": m.content} for m in request.messages])
    return json.dumps([{"role": "user", "content": request.prompt}])
