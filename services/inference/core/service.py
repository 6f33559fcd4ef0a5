"""The inference core: admits a request to a slot, runs it on the engine, and always gives the slot back.

It also keeps the model's residency: an idle model can be unloaded to give its memory back, and the next
request (or LoadModel) loads it again. Loading and unloading take turns under one lock, so a request that
arrives while the weights are being freed waits for them to come back instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from services.inference.core.engine import Engine
from services.inference.core.model import EngineActivity, ModelMetadata, ModelState
from services.inference.core.slots import SlotPool
from services.inference.core.validation import RequestLimits, check_prompt_fits, validate_request
from services.shared.domain import GenerationChunk, GenerationRequest
from services.shared.errors import ErrorKind, MeshError, resource_exhausted, unavailable

log = logging.getLogger(__name__)

# How long a caller should wait before retrying while the model loads.
_LOADING_RETRY_SECONDS = 1.0
_OUT_OF_MEMORY_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class ModelStatus:
    """The model as callers see it now: its metadata, state, free slots and what its engine is doing."""

    state: ModelState
    metadata: ModelMetadata | None
    free_slots: int
    total_slots: int
    activity: EngineActivity | None = None


class InferenceCore:
    def __init__(self, engine: Engine, limits: RequestLimits, slots: SlotPool) -> None:
        self._engine = engine
        self._limits = limits
        self._slots = slots
        self._state = ModelState.LOADING
        self._metadata: ModelMetadata | None = None
        self._residency = asyncio.Lock()

    @property
    def state(self) -> ModelState:
        return self._state

    def mark_ready(self, metadata: ModelMetadata) -> None:
        self._metadata = metadata
        self._state = ModelState.READY

    def mark_stopping(self) -> None:
        self._state = ModelState.STOPPING

    def status(self) -> ModelStatus:
        activity = self._engine.activity() if self._state is ModelState.READY else None
        return ModelStatus(self._state, self._metadata, self._slots.free, self._slots.total, activity)

    async def generate(self, request: GenerationRequest, model: str = "") -> AsyncIterator[GenerationChunk]:
        """Streams one completion. Validation and slot refusal happen before the first chunk."""
        self._require_started()
        request = validate_request(request, model, self._limits)
        lease = self._slots.try_acquire()
        try:
            if self._state is ModelState.UNLOADED:
                await self.load()
            prompt = await self._engine.prepare(request)
            check_prompt_fits(prompt, self._limits)
            async with aclosing(self._engine.generate(request, prompt)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self._slots.release(lease)

    async def load(self) -> ModelStatus:
        """Loads the weights again if they were unloaded; returns at once when they are loaded."""
        self._require_started()
        async with self._residency:
            if self._state is ModelState.UNLOADED:
                log.info("loading %s again", self._limits.model_name)
                try:
                    self._metadata = await asyncio.to_thread(self._engine.load)
                except MemoryError as error:
                    raise resource_exhausted(
                        "ENGINE_OUT_OF_MEMORY",
                        f"there is not enough memory to load {self._limits.model_name}",
                        _OUT_OF_MEMORY_RETRY_SECONDS,
                    ) from error
                self._state = ModelState.READY
        return self.status()

    async def unload(self) -> ModelStatus:
        """Frees the weights of an idle model. Refused while any request holds a slot."""
        self._require_started()
        async with self._residency:
            if self._slots.free < self._slots.total:
                raise MeshError(
                    "MODEL_BUSY",
                    f"{self._slots.total - self._slots.free} requests are running on {self._limits.model_name}",
                    kind=ErrorKind.FAILED_PRECONDITION,
                )
            if self._state is ModelState.READY:
                # Set before the first await: a request arriving from here on waits for the reload.
                self._state = ModelState.UNLOADED
                await self._engine.close()
                log.info("unloaded %s", self._limits.model_name)
        return self.status()

    def _require_started(self) -> None:
        if self._state is ModelState.LOADING:
            raise unavailable("MODEL_LOADING", f"{self._limits.model_name} is still loading", _LOADING_RETRY_SECONDS)
        if self._state is ModelState.STOPPING:
            raise unavailable("SHUTTING_DOWN", "this endpoint is shutting down; use another")
