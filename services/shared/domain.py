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
    # In [-2, 2]: positive values make tokens already in the completion less likely, once (presence) or by
    # how often they appeared (frequency); negative values more likely. None means 0.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # The log probability of each generated token, with this many likeliest alternatives (0 to 20);
    # None asks for none at all.
    logprobs: int | None = None
    # Control and special tokens (end of turn, image markers) are left out of the text unless False.
    skip_special_tokens: bool = True


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
class TokenChoice:
    """One token as text, with its log probability under the model, before sampling settings reshape it."""

    token: str
    logprob: float
    # The token's UTF-8 bytes: a token may hold part of a character, which its text cannot show.
    token_bytes: bytes = b""


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token and the likeliest tokens the model weighed at its position, likeliest first."""

    chosen: TokenChoice
    top: tuple[TokenChoice, ...] = ()


@dataclass(frozen=True)
class GenerationChunk:
    """New text and the tokens behind it. The last chunk of a stream has a finish reason and usage.

    With logprobs asked for, `logprobs` has one entry per generated token of the chunk, in order.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
