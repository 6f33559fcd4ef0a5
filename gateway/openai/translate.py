"""OpenAI request bodies to meshserve.gateway.v1 GenerateRequests. Pure: no I/O, no grpc.

What OpenAI defines but meshserve cannot serve is refused here by name (n > 1, tools, echo), so a client
never gets an answer to a different question than it asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshserve.gateway.v1 import gateway_pb2 as pb

from gateway.openai.errors import bad_request
from gateway.openai.schema import ChatCompletionRequest, ChatMessageIn, CompletionRequest

PRIORITY_HEADER = "x-meshserve-priority"
_PRIORITIES = {
    "low": pb.PRIORITY_LOW,
    "normal": pb.PRIORITY_NORMAL,
    "high": pb.PRIORITY_HIGH,
    "critical": pb.PRIORITY_CRITICAL,
}
_ROLES = {
    "system": pb.CHAT_ROLE_SYSTEM,
    "developer": pb.CHAT_ROLE_SYSTEM,
    "user": pb.CHAT_ROLE_USER,
    "assistant": pb.CHAT_ROLE_ASSISTANT,
}
# OpenAI allows at most this many alternatives per token in a text completion, and 20 in a chat.
MAX_COMPLETION_LOGPROBS = 5


@dataclass(frozen=True)
class Translated:
    request: pb.GenerateRequest
    # The mesh's names of parameters -> the ones this client sent, for error messages.
    param_aliases: dict[str, str]


def priority_of(header: str | None) -> int:
    if header is None or header == "":
        return pb.PRIORITY_NORMAL
    priority = _PRIORITIES.get(header.strip().lower())
    if priority is None:
        raise bad_request(
            f"{PRIORITY_HEADER} must be one of {', '.join(_PRIORITIES)}, got {header!r}",
            param=PRIORITY_HEADER,
            code="invalid_priority",
        )
    return priority


def chat_request(body: ChatCompletionRequest, priority: int) -> Translated:
    _refuse_unservable(body)
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise bad_request("only text responses are served; response_format must be text", param="response_format")
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
    request = _common(body, priority)
    request.messages.extend(_chat_message(index, message) for index, message in enumerate(body.messages))
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is not None:
        request.max_tokens = max_tokens
    if body.logprobs:
        request.logprobs = body.top_logprobs or 0
    aliases = {"logprobs": "top_logprobs"}
    if body.max_completion_tokens is not None:
        aliases["max_tokens"] = "max_completion_tokens"
    return Translated(request, aliases)


def completion_request(body: CompletionRequest, priority: int) -> Translated:
    _refuse_unservable(body)
    if body.echo:
        raise bad_request("echo is not supported", param="echo")
    if body.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    if body.best_of not in (None, 1):
        raise bad_request("best_of must be 1", param="best_of")
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise bad_request("send one prompt per request", param="prompt")
    request = _common(body, priority)
    request.prompt = prompts[0]
    if body.max_tokens is not None:
        request.max_tokens = body.max_tokens
    if body.logprobs is not None:
        if not 0 <= body.logprobs <= MAX_COMPLETION_LOGPROBS:
            raise bad_request(f"logprobs must be in [0, {MAX_COMPLETION_LOGPROBS}]", param="logprobs")
        request.logprobs = body.logprobs
    return Translated(request, {"messages": "prompt"})


def _refuse_unservable(body: ChatCompletionRequest | CompletionRequest) -> None:
    if body.n not in (None, 1):
        raise bad_request(f"n must be 1: one completion per request is served, not {body.n}", param="n")
    if body.tools:
        raise bad_request("tools are not supported", param="tools")
    if body.logit_bias:
        raise bad_request("logit_bias is not supported", param="logit_bias")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options needs stream: true", param="stream_options")


def _common(body: ChatCompletionRequest | CompletionRequest, priority: int) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=body.model, priority=priority, fallback_models=body.fallback_models)
    for field in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(body, field)
        if value is not None:
            setattr(request, field, value)
    if body.stop is not None:
        request.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop)
    if not body.skip_special_tokens:
        request.skip_special_tokens = False
    return request


def _chat_message(index: int, message: ChatMessageIn) -> pb.ChatMessage:
    content = message.content
    if content is None:
        raise bad_request(f"messages[{index}].content is required", param=f"messages[{index}].content")
    text = content if isinstance(content, str) else "".join(part.text for part in content)
    return pb.ChatMessage(role=_ROLES[message.role], content=text)
