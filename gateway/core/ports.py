"""What the gateway core needs from the rest of the mesh, as protocols the grpc adapters implement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from services.shared.domain import GenerationChunk, GenerationRequest, Priority, SlotOutcome
from services.shared.identity import CallerLimits


@dataclass(frozen=True)
class SlotAsk:
    model: str
    priority: Priority
    caller_id: str
    request_id: str
    fallback_models: tuple[str, ...] = ()
    limits: CallerLimits | None = None


@dataclass(frozen=True)
class SlotGrant:
    slot_id: str
    model: str
    address: str


class HeldSlot(Protocol):
    """A granted slot, held until released or until the block that acquired it ends."""

    @property
    def grant(self) -> SlotGrant: ...

    async def recalled(self) -> None:
        """Returns once the scheduler takes the slot back for more urgent work; never, for most slots."""
        ...

    async def lost(self) -> str:
        """Returns, with the scheduler's reason, once the slot's endpoint has left the mesh; never, for most."""
        ...

    async def release(self, outcome: SlotOutcome, first_token_seconds: float | None, tokens: int = 0) -> None:
        """Tells the scheduler how the work ended and gives the slot back; later calls do nothing.

        The scheduler's circuit breaker, latency average and out-of-memory handling learn from the outcome;
        its per-caller tokens-per-minute limit from `tokens` (prompt and completion).
        """
        ...


class SlotSource(Protocol):
    def acquire(self, ask: SlotAsk, timeout: float | None) -> AbstractAsyncContextManager[HeldSlot]:
        """Holds a granted slot for the duration of the block; raises MeshError when refused.

        A slot the block does not release is given back with an UNKNOWN outcome when the block ends.
        """
        ...


class InferenceClient(Protocol):
    def generate(
        self, address: str, model: str, request: GenerationRequest, timeout: float | None
    ) -> AsyncIterator[GenerationChunk]:
        """Streams a completion from one endpoint; raises MeshError on failure."""
        ...

    def forget(self, address: str) -> None:
        """The endpoint at `address` left the mesh: a later call there opens a fresh connection, rather than
        one that may have died with the network between."""
        ...
