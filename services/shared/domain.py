"""The types every service shares: what a generation asks for and streams back, its priority, and how a slot ended.

Plain data. The gateway, the scheduler and the inference service each convert their own protos to and from
these, so no service imports another's core.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


class Priority(IntEnum):
    """Higher values are served first."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


class SlotOutcome(Enum):
    """How the work on a slot ended, as its holder reports it on release."""

    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    OUT_OF_MEMORY = "out_of_memory"


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
