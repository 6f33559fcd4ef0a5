"""The gateway core: check a request, take a slot from the scheduler, stream from the granted endpoint."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from gateway.core.ports import InferenceClient, SlotAsk, SlotSource
from orchestrator.scheduler.core.model import Priority, SlotOutcome
from services.inference.core.model import GenerationChunk, GenerationRequest
from services.inference.core.validation import check_request_shape
from services.shared.errors import ErrorKind, MeshError, not_found


@dataclass(frozen=True)
class GatewayRequest:
    generation: GenerationRequest
    model: str = ""
    priority: Priority = Priority.NORMAL
    caller_id: str = ""
    # Models that will do when the scheduler's device is under pressure and `model` does not fit.
    fallback_models: tuple[str, ...] = ()


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
    ) -> None:
        self._models = models
        self._slots = slots
        self._inference = inference
        self._clock = clock

    async def generate(self, request: GatewayRequest, deadline: float | None) -> AsyncIterator[GatewayChunk]:
        """Streams the completion. Every check and refusal happens before the first chunk."""
        model = request.model or self._models[0]
        if model not in self._models:
            raise not_found("UNKNOWN_MODEL", f"no model named {model!r}; see GET /v1/models", model=model)
        check_request_shape(request.generation)
        for fallback in request.fallback_models:
            if fallback not in self._models:
                raise not_found("UNKNOWN_MODEL", f"no fallback model named {fallback!r}", model=fallback)
        ask = SlotAsk(
            model, request.priority, request.caller_id, request.generation.request_id, request.fallback_models
        )
        async with self._slots.acquire(ask, self._remaining(deadline)) as grant:
            started = self._clock()
            grant.outcome = SlotOutcome.CANCELLED
            stream = self._inference.generate(grant.address, grant.model, request.generation, self._remaining(deadline))
            try:
                async with aclosing(stream) as chunks:
                    async for chunk in chunks:
                        if grant.first_token_seconds is None:
                            grant.first_token_seconds = self._clock() - started
                        yield GatewayChunk(chunk, grant.model)
            except MeshError as error:
                grant.outcome = outcome_of(error)
                raise
            grant.outcome = SlotOutcome.SUCCEEDED

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise MeshError("DEADLINE_EXCEEDED", "the request's deadline passed", kind=ErrorKind.DEADLINE_EXCEEDED)
        return remaining


def outcome_of(error: MeshError) -> SlotOutcome:
    """Whether an endpoint's error says the endpoint is failing, the device is out of memory, or neither."""
    if error.reason == "ENGINE_OUT_OF_MEMORY":
        return SlotOutcome.OUT_OF_MEMORY
    if error.kind is ErrorKind.UNAVAILABLE:
        return SlotOutcome.FAILED
    # The caller's own mistakes and deadlines say nothing about the endpoint's health.
    return SlotOutcome.CANCELLED
