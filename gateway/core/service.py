"""The gateway core: check a request, take a slot from the scheduler, stream from the granted endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from gateway.core.ports import InferenceClient, SlotAsk, SlotGrant, SlotSource
from gateway.core.relay import ENDPOINT_LOST, PREEMPTED, relay
from services.shared.domain import GenerationChunk, GenerationRequest, Priority, SlotOutcome
from services.shared.errors import ErrorKind, MeshError, not_found
from services.shared.identity import CallerLimits
from services.shared.request_shape import check_request_shape

# The scheduler frees a slot when the gateway gives it back, but the engine frees its own a moment later,
# once it has seen the cancelled stream. A grant that lands in that gap is refused by the endpoint with
# SLOTS_EXHAUSTED; the work was admitted, so it waits out the gap instead of being lost.
_ENGINE_RELEASE_GRACE_SECONDS = 5.0
_ENGINE_RELEASE_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class GatewayRequest:
    generation: GenerationRequest
    model: str = ""
    priority: Priority = Priority.NORMAL
    caller_id: str = ""
    # Models that will do when the scheduler's device is under pressure and `model` does not fit.
    fallback_models: tuple[str, ...] = ()
    # What the caller's credential allows; the scheduler holds them.
    limits: CallerLimits | None = None


@dataclass(frozen=True)
class GatewayChunk:
    chunk: GenerationChunk
    model: str


class GatewayCore:
    def __init__(
        self,
        models: list[str],
        slots: SlotSource,
        inference: InferenceClient,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._models = models
        self._slots = slots
        self._inference = inference
        self._clock = clock
        self._sleep = sleep

    def check(self, request: GatewayRequest) -> str:
        """The model the request runs on, once every check that needs no model loaded passes; the jobs
        service makes them too, so that a job it accepts fails only for reasons a submission cannot see."""
        model = request.model or self._models[0]
        if model not in self._models:
            raise not_found("UNKNOWN_MODEL", f"no model named {model!r}; see GET /v1/models", model=model)
        check_request_shape(request.generation)
        for fallback in request.fallback_models:
            if fallback not in self._models:
                raise not_found("UNKNOWN_MODEL", f"no fallback model named {fallback!r}", model=fallback)
        return model

    async def generate(self, request: GatewayRequest, deadline: float | None) -> AsyncIterator[GatewayChunk]:
        """Streams the completion. Every check and refusal happens before the first chunk."""
        model = self.check(request)
        ask = SlotAsk(
            model,
            request.priority,
            request.caller_id,
            request.generation.request_id,
            request.fallback_models,
            request.limits,
        )
        async with self._slots.acquire(ask, self._remaining(deadline)) as slot:
            grant, started = slot.grant, self._clock()
            outcome, first_token_seconds, tokens = SlotOutcome.CANCELLED, None, TokenCount()
            # Background work may be recalled for more urgent work; any work is lost with its endpoint.
            recallable = _effective_priority(request) is Priority.LOW
            admitted = relay(self._stream_admitted(grant, request.generation, deadline), slot, recallable)
            try:
                async with aclosing(admitted) as chunks:
                    async for chunk in chunks:
                        if first_token_seconds is None:
                            first_token_seconds = self._clock() - started
                        tokens.saw(chunk)
                        yield GatewayChunk(chunk, grant.model)
                outcome = SlotOutcome.SUCCEEDED
            except MeshError as error:
                outcome = outcome_of(error)
                if error.reason == ENDPOINT_LOST:
                    self._inference.forget(grant.address)
                raise
            finally:
                # Also when the caller goes away mid-stream: the outcome stays CANCELLED, which says
                # nothing against the endpoint.
                await slot.release(outcome, first_token_seconds, tokens.total)

    async def _stream_admitted(
        self, grant: SlotGrant, generation: GenerationRequest, deadline: float | None
    ) -> AsyncIterator[GenerationChunk]:
        give_up_at = self._clock() + _ENGINE_RELEASE_GRACE_SECONDS
        while True:
            started = False
            try:
                stream = self._inference.generate(grant.address, grant.model, generation, self._remaining(deadline))
                async with aclosing(stream) as chunks:
                    async for chunk in chunks:
                        started = True
                        yield chunk
                return
            except MeshError as error:
                if started or error.reason != "SLOTS_EXHAUSTED" or self._clock() >= give_up_at:
                    raise
                wait = min(error.retry_after_seconds or _ENGINE_RELEASE_POLL_SECONDS, _ENGINE_RELEASE_POLL_SECONDS)
                await self._sleep(wait)

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise MeshError("DEADLINE_EXCEEDED", "the request's deadline passed", kind=ErrorKind.DEADLINE_EXCEEDED)
        return remaining


class TokenCount:
    """Tokens a request used: the endpoint's usage when it reports one, else the tokens streamed so far."""

    def __init__(self) -> None:
        self._streamed, self._reported = 0, None

    def saw(self, chunk: GenerationChunk) -> None:
        self._streamed += len(chunk.token_ids)
        if chunk.usage is not None:
            self._reported = chunk.usage.input_tokens + chunk.usage.output_tokens

    @property
    def total(self) -> int:
        return self._streamed if self._reported is None else self._reported


def _effective_priority(request: GatewayRequest) -> Priority:
    # The scheduler serves an ask at its credential's ceiling when it asks for more.
    return min(request.priority, request.limits.max_priority) if request.limits else request.priority


def outcome_of(error: MeshError) -> SlotOutcome:
    """Whether an endpoint's error says the endpoint is failing, the device is out of memory, or neither."""
    if error.reason in (PREEMPTED, ENDPOINT_LOST):
        # The scheduler took the slot back, and knows why.
        return SlotOutcome.CANCELLED
    if error.reason == "ENGINE_OUT_OF_MEMORY":
        return SlotOutcome.OUT_OF_MEMORY
    if error.kind is ErrorKind.UNAVAILABLE:
        return SlotOutcome.FAILED
    # The caller's own mistakes and deadlines say nothing about the endpoint's health.
    return SlotOutcome.CANCELLED
