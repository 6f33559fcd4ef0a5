"""The inference core: admits a request to a slot, runs it on the engine, and always gives the slot back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from services.inference.core.engine import Engine
from services.inference.core.model import GenerationChunk, GenerationRequest, ModelMetadata, ModelState
from services.inference.core.slots import SlotPool
from services.inference.core.validation import RequestLimits, check_prompt_fits, validate_request
from services.shared.errors import unavailable

log = logging.getLogger(__name__)

# How long a caller should wait before retrying while the model loads.
_LOADING_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class ModelStatus:
    """The model as callers see it now: its metadata, state and free slots."""

    state: ModelState
    metadata: ModelMetadata | None
    free_slots: int
    total_slots: int


class InferenceCore:
    def __init__(self, engine: Engine, limits: RequestLimits, slots: SlotPool) -> None:
        self._engine = engine
        self._limits = limits
        self._slots = slots
        self._state = ModelState.LOADING
        self._metadata: ModelMetadata | None = None

    @property
    def state(self) -> ModelState:
        return self._state

    def mark_ready(self, metadata: ModelMetadata) -> None:
        self._metadata = metadata
        self._state = ModelState.READY

    def mark_stopping(self) -> None:
        self._state = ModelState.STOPPING

    def status(self) -> ModelStatus:
        return ModelStatus(self._state, self._metadata, self._slots.free, self._slots.total)

    async def generate(self, request: GenerationRequest, model: str = "") -> AsyncIterator[GenerationChunk]:
        """Streams one completion. Validation and slot refusal happen before the first chunk."""
        self._require_ready()
        request = validate_request(request, model, self._limits)
        lease = self._slots.try_acquire()
        try:
            prompt = await self._engine.prepare(request)
            check_prompt_fits(prompt, self._limits)
            async with aclosing(self._engine.generate(request, prompt)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self._slots.release(lease)

    def _require_ready(self) -> None:
        if self._state is ModelState.LOADING:
            raise unavailable("MODEL_LOADING", f"{self._limits.model_name} is still loading", _LOADING_RETRY_SECONDS)
        if self._state is ModelState.STOPPING:
            raise unavailable("SHUTTING_DOWN", "this endpoint is shutting down; use another")
