"""The Engine protocol: everything the inference core needs from llama.cpp, vLLM or any other engine.

The core owns validation, slots and cancellation; an engine only loads a model, prepares prompts and
streams chunks. An engine never sees more concurrent generate() calls than its slot_count: the number of
sequences it batches together (one context per slot for the per-slot llama.cpp engine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from services.inference.core.model import EngineActivity, ModelMetadata, PreparedPrompt
from services.shared.domain import GenerationChunk, GenerationRequest


@runtime_checkable
class Engine(Protocol):
    def load(self) -> ModelMetadata:
        """Loads the model. Blocking, so it runs in a thread. Called again after close() to reload."""
        ...

    async def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        """Renders the prompt (applying the chat template to messages) and tokenizes it."""
        ...

    def generate(self, request: GenerationRequest, prompt: PreparedPrompt) -> AsyncIterator[GenerationChunk]:
        """Streams the completion. Closing the iterator stops generation within one token."""
        ...

    def activity(self) -> EngineActivity:
        """What the engine runs now and how full its KV cache is, by its own count. Cheap; loaded models only."""
        ...

    async def close(self) -> None:
        """Releases the model and its memory: at shutdown, or to unload it while idle. Never while generating."""
        ...
