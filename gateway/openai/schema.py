"""OpenAI's request bodies for chat and text completions, as pydantic models.

Fields OpenAI defines and meshserve serves are typed here; unknown fields are kept aside (extra="allow")
so that the front can ignore them as vLLM does and name them in a debug line. Ranges are checked once, by
the gateway, so that every surface refuses a bad value with the same words.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

# What the gateway's proto carries (int32): a larger count is refused here, with its name, not overflowed.
Int32 = Annotated[int, Field(ge=-(2**31), lt=2**31)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Body):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _CompletionFields(_Body):
    model: str = Field(min_length=1)
    max_tokens: Int32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**64)
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: Int32 | None = None
    # Strict: "yes" or 1 is a mistake to name, not a stream to start.
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI-compatible fields OpenAI itself does not define, named as vLLM names them.
    fallback_models: list[str] = []
    skip_special_tokens: bool = True
    # Known to OpenAI, served by no meshserve engine: refused by name rather than silently ignored.
    tools: list[Any] | None = None
    logit_bias: dict[str, float] | None = None


class ChatCompletionRequest(_CompletionFields):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: Int32 | None = None
    logprobs: StrictBool = False
    top_logprobs: Int32 | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_CompletionFields):
    prompt: str | list[str]
    logprobs: Int32 | None = None
    echo: StrictBool = False
    suffix: str | None = None
    best_of: Int32 | None = None
