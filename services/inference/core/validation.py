"""Checks a generation request against the model's limits and fills in the defaults.

Every refusal is INVALID_ARGUMENT with a stable reason, so a caller can tell what to fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from services.inference.core.model import GenerationRequest, PreparedPrompt, SamplingParams
from services.shared.errors import MeshError, invalid_argument

MAX_STOP_SEQUENCES = 8
MAX_STOP_SEQUENCE_CHARS = 256
MAX_TEMPERATURE = 2.0
# No tokenizer turns fewer than this many characters into one token, so longer text cannot fit.
MAX_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class RequestLimits:
    """The served model's limits and defaults."""

    model_name: str
    context_length: int
    default_max_tokens: int
    default_temperature: float
    default_top_p: float


def validate_request(request: GenerationRequest, model: str, limits: RequestLimits) -> GenerationRequest:
    """Returns the request with every sampling parameter set, or raises MeshError."""
    _check_model(model, limits)
    check_request_shape(request)
    _check_text_length(request, limits)
    return replace(request, sampling=_resolve_sampling(request.sampling, limits))


def check_request_shape(request: GenerationRequest) -> None:
    """The checks that need no knowledge of the model, so a gateway can make them before queueing."""
    _check_input(request)
    sampling = request.sampling
    if sampling.max_tokens is not None and sampling.max_tokens < 1:
        raise _out_of_range("INVALID_MAX_TOKENS", "max_tokens", sampling.max_tokens, "[1, context length)")
    if sampling.temperature is not None:
        _check_temperature(sampling.temperature)
    if sampling.top_p is not None:
        _check_top_p(sampling.top_p)
    _check_stops(sampling.stop)


def check_prompt_fits(prompt: PreparedPrompt, limits: RequestLimits) -> None:
    """The prompt must leave room for at least one generated token."""
    if len(prompt.token_ids) >= limits.context_length:
        raise invalid_argument(
            "PROMPT_TOO_LONG",
            f"the prompt is {len(prompt.token_ids)} tokens; the context holds {limits.context_length}, "
            "including the completion",
            prompt_tokens=len(prompt.token_ids),
            context_length=limits.context_length,
        )


def _check_model(model: str, limits: RequestLimits) -> None:
    if model and model != limits.model_name:
        raise invalid_argument(
            "UNKNOWN_MODEL",
            f"this endpoint serves {limits.model_name!r}, not {model!r}",
            model=model,
            served_model=limits.model_name,
        )


def _check_input(request: GenerationRequest) -> None:
    if request.prompt and request.messages:
        raise invalid_argument("PROMPT_AND_MESSAGES", "set either prompt or messages, not both")
    if not request.prompt and not request.messages:
        raise invalid_argument("EMPTY_PROMPT", "the prompt is empty: set prompt or messages")
    if request.messages and not any(message.content for message in request.messages):
        raise invalid_argument("EMPTY_PROMPT", "every message is empty")


def _check_text_length(request: GenerationRequest, limits: RequestLimits) -> None:
    text_length = len(request.prompt) + sum(len(message.content) for message in request.messages)
    if text_length > limits.context_length * MAX_CHARS_PER_TOKEN:
        raise invalid_argument(
            "PROMPT_TOO_LONG",
            f"the prompt is {text_length} characters, far more than a {limits.context_length}-token context holds",
            context_length=limits.context_length,
        )


def _resolve_sampling(sampling: SamplingParams, limits: RequestLimits) -> SamplingParams:
    max_tokens = limits.default_max_tokens if sampling.max_tokens is None else sampling.max_tokens
    temperature = limits.default_temperature if sampling.temperature is None else sampling.temperature
    top_p = limits.default_top_p if sampling.top_p is None else sampling.top_p
    if not 1 <= max_tokens < limits.context_length:
        raise _out_of_range("INVALID_MAX_TOKENS", "max_tokens", max_tokens, f"[1, {limits.context_length - 1}]")
    _check_temperature(temperature)
    _check_top_p(top_p)
    return replace(sampling, max_tokens=max_tokens, temperature=temperature, top_p=top_p)


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
        raise _out_of_range("INVALID_TEMPERATURE", "temperature", temperature, f"[0, {MAX_TEMPERATURE}]")


def _check_top_p(top_p: float) -> None:
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise _out_of_range("INVALID_TOP_P", "top_p", top_p, "(0, 1]")


def _check_stops(stops: tuple[str, ...]) -> None:
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid_argument("INVALID_STOP", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
    if any(not stop or len(stop) > MAX_STOP_SEQUENCE_CHARS for stop in stops):
        raise invalid_argument(
            "INVALID_STOP", f"each stop sequence must have 1 to {MAX_STOP_SEQUENCE_CHARS} characters"
        )


def _out_of_range(reason: str, field: str, value: float, allowed: str) -> MeshError:
    return invalid_argument(reason, f"{field} must be in {allowed}, got {value}", field=field, allowed=allowed)
