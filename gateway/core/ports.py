"""What the gateway core needs from the rest of the mesh, as protocols the grpc adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from orchestrator.scheduler.core.model import Priority, SlotOutcome
from services.inference.core.model import GenerationChunk, GenerationRequest


@dataclass(frozen=True)
class SlotAsk:
    model: str
    priority: Priority
    caller_id: str
    request_id: str
    fallback_models: tuple[str, ...] = ()


@dataclass
class SlotGrant:
    slot_id: str
    model: str
    address: str
    # How the work ended, told to the scheduler when the slot is given back: its circuit breaker, latency
    # average and out-of-memory handling learn from it.
    outcome: SlotOutcome = SlotOutcome.UNKNOWN
    first_token_seconds: float | None = None


class SlotSource(Protocol):
    def acquire(self, ask: SlotAsk, timeout: float | None) -> AbstractAsyncContextManager[SlotGrant]:
        """Holds a granted slot for the duration of the block; raises MeshError when refused."""
        ...


class InferenceClient(Protocol):
    def generate(
        self, address: str, model: str, request: GenerationRequest, timeout: float | None
    ) -> AsyncIterator[GenerationChunk]:
        """Streams a completion from one endpoint; raises MeshError on failure."""
        ...
