"""The inference service's domain: what a request asks for and what an engine streams back.

Plain data, shared by the core, the engines and the servicer's proto conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ChatRole(Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class ChatMessage:
    role: ChatRole
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Sampling as asked for; None means the model's default, which validation fills in."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """One completion of either a plain prompt or a conversation, never both."""

    sampling: SamplingParams = SamplingParams()
    prompt: str = ""
    messages: tuple[ChatMessage, ...] = ()
    request_id: str = ""


class FinishReason(Enum):
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class GenerationChunk:
    """New text and the tokens behind it. The last chunk of a stream has a finish reason and usage."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class PreparedPrompt:
    """A request's prompt as the engine will evaluate it: rendered and tokenized."""

    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class EngineActivity:
    """What the engine is doing now, by its own count: requests running and queued inside it, and its KV cache."""

    running_requests: int
    waiting_requests: int
    kv_cache_capacity_bytes: int
    kv_cache_used_bytes: int


class ModelState(Enum):
    LOADING = "loading"
    READY = "ready"
    STOPPING = "stopping"
    # The weights were freed after an idle spell; the next request loads them again.
    UNLOADED = "unloaded"


@dataclass(frozen=True)
class ModelMetadata:
    """What an engine knows of its model once loaded: limits and memory footprint."""

    name: str
    engine: str
    context_length: int
    slot_count: int
    weights_bytes: int
    kv_cache_bytes_per_slot: int
    # Everything the loaded model holds with every slot in use. How slots share weights is the engine's to know.
    memory_footprint_bytes: int
    layer_count: int = 0
    kv_head_count: int = 0
    head_dim: int = 0
    kv_cache_element_bytes: int = 2
