"""The inference service's own domain: prepared prompts, the engine's activity, and the loaded model.

Plain data, shared by the core, the engines and the servicer's proto conversion. What a request asks for
and what it streams back are in services.shared.domain, since every service shares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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
