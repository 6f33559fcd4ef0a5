"""Conversions between the shared domain and the protos that two services speak.

The scheduler's slot protocol has two ends (the scheduler and the gateway), and a completion chunk is
written into two GenerateResponse messages (the inference one and the public one). Each mapping lives
here once, so the two ends cannot drift apart.
"""

from __future__ import annotations

from typing import Any, TypeVar

from meshserve.scheduler.v1 import scheduler_pb2 as spb

from services.shared.domain import (
    FinishReason,
    GenerationChunk,
    Priority,
    SamplingParams,
    SlotOutcome,
    TokenChoice,
    TokenLogprob,
)

ResponseT = TypeVar("ResponseT")

# An unset priority is NORMAL, so an old client that sends none is served as before.
SLOT_PRIORITY_FROM_PROTO = {
    spb.PRIORITY_UNSPECIFIED: Priority.NORMAL,
    spb.PRIORITY_LOW: Priority.LOW,
    spb.PRIORITY_NORMAL: Priority.NORMAL,
    spb.PRIORITY_HIGH: Priority.HIGH,
    spb.PRIORITY_CRITICAL: Priority.CRITICAL,
}
SLOT_PRIORITY_TO_PROTO = {
    priority: value for value, priority in SLOT_PRIORITY_FROM_PROTO.items() if value != spb.PRIORITY_UNSPECIFIED
}

SLOT_OUTCOME_FROM_PROTO = {
    spb.SLOT_OUTCOME_UNSPECIFIED: SlotOutcome.UNKNOWN,
    spb.SLOT_OUTCOME_SUCCEEDED: SlotOutcome.SUCCEEDED,
    spb.SLOT_OUTCOME_FAILED: SlotOutcome.FAILED,
    spb.SLOT_OUTCOME_CANCELLED: SlotOutcome.CANCELLED,
    spb.SLOT_OUTCOME_OUT_OF_MEMORY: SlotOutcome.OUT_OF_MEMORY,
}
SLOT_OUTCOME_TO_PROTO = {outcome: value for value, outcome in SLOT_OUTCOME_FROM_PROTO.items()}


def fill_completion_fields(
    response: ResponseT, chunk: GenerationChunk, finish_reasons: dict[FinishReason, int]
) -> ResponseT:
    """Text, finish reason and usage into any GenerateResponse: the inference one or the public one."""
    response.text = chunk.text  # type: ignore[attr-defined]
    if chunk.finish_reason is not None:
        response.finish_reason = finish_reasons[chunk.finish_reason]  # type: ignore[attr-defined]
    if chunk.usage is not None:
        response.usage.input_tokens = chunk.usage.input_tokens  # type: ignore[attr-defined]
        response.usage.output_tokens = chunk.usage.output_tokens  # type: ignore[attr-defined]
    for entry in chunk.logprobs:
        written = _fill_choice(response.logprobs.add(), entry.chosen)  # type: ignore[attr-defined]
        for alternative in entry.top:
            _fill_choice(written.top_logprobs.add(), alternative)
    return response


def logprobs_of(response: Any) -> tuple[TokenLogprob, ...]:
    """The logprobs of any GenerateResponse, the inference one or the public one."""
    return tuple(
        TokenLogprob(_choice_of(entry), tuple(_choice_of(top) for top in entry.top_logprobs))
        for entry in response.logprobs
    )


def _fill_choice(message: Any, choice: TokenChoice) -> Any:
    message.token, message.logprob, message.token_bytes = choice.token, choice.logprob, choice.token_bytes
    return message


def _choice_of(message: Any) -> TokenChoice:
    return TokenChoice(message.token, message.logprob, message.token_bytes)


# The sampling fields both GenerateRequest messages (public and inference) carry as proto3 optionals.
_OPTIONAL_SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
)


def sampling_of(message: Any) -> SamplingParams:
    """The sampling of any GenerateRequest; an unset optional stays None, so the model's default applies."""
    present = {field: getattr(message, field) for field in _OPTIONAL_SAMPLING_FIELDS if message.HasField(field)}
    skip = message.skip_special_tokens if message.HasField("skip_special_tokens") else True
    return SamplingParams(**present, stop=tuple(message.stop), skip_special_tokens=skip)


def fill_sampling_fields(message: Any, sampling: SamplingParams) -> Any:
    for field in _OPTIONAL_SAMPLING_FIELDS:
        if getattr(sampling, field) is not None:
            setattr(message, field, getattr(sampling, field))
    message.stop.extend(sampling.stop)
    if not sampling.skip_special_tokens:
        message.skip_special_tokens = False
    return message
