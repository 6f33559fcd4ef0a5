import math

import pytest

from services.inference.core.model import PreparedPrompt
from services.inference.core.validation import RequestLimits, check_prompt_fits, validate_request
from services.shared.domain import ChatMessage, ChatRole, GenerationRequest, SamplingParams
from services.shared.errors import ErrorKind, MeshError

LIMITS = RequestLimits("m", context_length=100, default_max_tokens=16, default_temperature=0.8, default_top_p=0.9)


def reason_for(request: GenerationRequest, model: str = "") -> str:
    with pytest.raises(MeshError) as refused:
        validate_request(request, model, LIMITS)
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
    return refused.value.reason


def test_defaults_fill_unset_sampling() -> None:
    resolved = validate_request(GenerationRequest(prompt="hi"), "", LIMITS).sampling
    assert (resolved.max_tokens, resolved.temperature, resolved.top_p) == (16, 0.8, 0.9)


def test_given_sampling_is_kept() -> None:
    request = GenerationRequest(SamplingParams(max_tokens=5, temperature=0.0, top_p=1.0, seed=3), prompt="hi")
    assert validate_request(request, "m", LIMITS).sampling == SamplingParams(5, 0.0, 1.0, 3)


@pytest.mark.parametrize(
    ("sampling", "reason"),
    [
        (SamplingParams(max_tokens=0), "INVALID_MAX_TOKENS"),
        (SamplingParams(max_tokens=100), "INVALID_MAX_TOKENS"),
        (SamplingParams(temperature=-1e-6), "INVALID_TEMPERATURE"),
        (SamplingParams(temperature=math.inf), "INVALID_TEMPERATURE"),
        (SamplingParams(temperature=math.nan), "INVALID_TEMPERATURE"),
        (SamplingParams(top_p=0.0), "INVALID_TOP_P"),
        (SamplingParams(top_p=math.nan), "INVALID_TOP_P"),
        (SamplingParams(stop=("x",) * 9), "INVALID_STOP"),
        (SamplingParams(stop=("x" * 257,)), "INVALID_STOP"),
    ],
)
def test_out_of_range_sampling_is_refused(sampling: SamplingParams, reason: str) -> None:
    assert reason_for(GenerationRequest(sampling, prompt="hi")) == reason


def test_prompt_and_messages_together_are_refused() -> None:
    request = GenerationRequest(prompt="hi", messages=(ChatMessage(ChatRole.USER, "hi"),))
    assert reason_for(request) == "PROMPT_AND_MESSAGES"


def test_nothing_to_complete_is_refused() -> None:
    assert reason_for(GenerationRequest()) == "EMPTY_PROMPT"
    assert reason_for(GenerationRequest(messages=(ChatMessage(ChatRole.USER, ""),))) == "EMPTY_PROMPT"


def test_another_model_is_refused() -> None:
    assert reason_for(GenerationRequest(prompt="hi"), model="other") == "UNKNOWN_MODEL"


def test_text_far_beyond_the_context_is_refused_before_tokenizing() -> None:
    assert reason_for(GenerationRequest(prompt="x" * 100 * 64 + "x")) == "PROMPT_TOO_LONG"


def test_a_prompt_must_leave_room_for_one_token() -> None:
    check_prompt_fits(PreparedPrompt(tuple(range(99))), LIMITS)
    with pytest.raises(MeshError) as refused:
        check_prompt_fits(PreparedPrompt(tuple(range(100))), LIMITS)
    assert refused.value.reason == "PROMPT_TOO_LONG"
    assert refused.value.metadata == {"prompt_tokens": "100", "context_length": "100"}


def test_shape_checks_need_no_model_limits() -> None:
    from services.shared.request_shape import check_request_shape

    check_request_shape(GenerationRequest(SamplingParams(max_tokens=10**6), prompt="hi"))
    for request, reason in [
        (GenerationRequest(), "EMPTY_PROMPT"),
        (GenerationRequest(SamplingParams(max_tokens=0), prompt="hi"), "INVALID_MAX_TOKENS"),
        (GenerationRequest(SamplingParams(temperature=9.0), prompt="hi"), "INVALID_TEMPERATURE"),
        (GenerationRequest(SamplingParams(top_p=0.0), prompt="hi"), "INVALID_TOP_P"),
        (GenerationRequest(SamplingParams(stop=("",)), prompt="hi"), "INVALID_STOP"),
    ]:
        with pytest.raises(MeshError) as refused:
            check_request_shape(request)
        assert refused.value.reason == reason
