"""Checks a generation request against the model's limits and fills in the defaults.

Every refusal is INVALID_ARGUMENT with a stable reason, so a caller can tell what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.inference.core.model import PreparedPrompt
from services.shared.domain import GenerationRequest, SamplingParams
from services.shared.errors import invalid_argument
from services.shared.request_shape import check_request_shape, check_temperature, check_top_p, out_of_range

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
        raise out_of_range("INVALID_MAX_TOKENS", "max_tokens", max_tokens, f"[1, {limits.context_length - 1}]")
    check_temperature(temperature)
    check_top_p(top_p)
    return replace(sampling, max_tokens=max_tokens, temperature=temperature, top_p=top_p)
