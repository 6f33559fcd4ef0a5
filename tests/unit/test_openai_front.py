"""The OpenAI front's pure parts: bodies to gateway requests, gateway messages to OpenAI objects, errors."""

from __future__ import annotations

import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb

from gateway.openai.errors import OpenAIError, from_mesh_error, from_validation_errors
from gateway.openai.responses import CompletionWriter
from gateway.openai.schema import ChatCompletionRequest, CompletionRequest
from gateway.openai.translate import chat_request, completion_request, priority_of
from services.shared.errors import invalid_argument, not_found, resource_exhausted, unavailable


def chat_body(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}], **fields)


def test_max_completion_tokens_wins_over_max_tokens_and_errors_name_it() -> None:
    translated = chat_request(chat_body(max_tokens=5, max_completion_tokens=9), pb.PRIORITY_NORMAL)
    assert translated.request.max_tokens == 9
    assert translated.param_aliases["max_tokens"] == "max_completion_tokens"
    assert not chat_request(chat_body(), pb.PRIORITY_NORMAL).request.HasField("max_tokens")


def test_a_chat_carries_roles_parts_sampling_and_stops_as_the_gateway_takes_them() -> None:
    body = ChatCompletionRequest(
        model="m",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
        stop="END", seed=3, temperature=0.5, presence_penalty=1.0, logprobs=True, top_logprobs=2,
        skip_special_tokens=False, fallback_models=["small"],
    )  # fmt: skip
    request = chat_request(body, pb.PRIORITY_HIGH).request
    assert [(m.role, m.content) for m in request.messages] == [
        (pb.CHAT_ROLE_SYSTEM, "Be brief."),
        (pb.CHAT_ROLE_USER, "ab"),
    ]
    assert list(request.stop) == ["END"] and request.seed == 3 and request.temperature == 0.5
    assert request.presence_penalty == 1.0 and not request.HasField("frequency_penalty")
    assert request.logprobs == 2 and request.skip_special_tokens is False
    assert request.priority == pb.PRIORITY_HIGH and list(request.fallback_models) == ["small"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"n": 2}, "n"), ({"tools": [{"type": "function"}]}, "tools"), ({"top_logprobs": 2}, "top_logprobs"),
     ({"stream_options": {"include_usage": True}}, "stream_options"), ({"logit_bias": {"1": 5.0}}, "logit_bias")],
)  # fmt: skip
def test_what_cannot_be_served_is_refused_by_name(fields, param) -> None:
    with pytest.raises(OpenAIError) as refused:
        chat_request(chat_body(**fields), pb.PRIORITY_NORMAL)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_a_text_completion_takes_one_prompt_and_at_most_five_logprobs() -> None:
    request = completion_request(CompletionRequest(model="m", prompt=["only"], logprobs=5), pb.PRIORITY_LOW).request
    assert request.prompt == "only" and request.logprobs == 5
    for body in (CompletionRequest(model="m", prompt=["a", "b"]), CompletionRequest(model="m", prompt="a", logprobs=6)):
        with pytest.raises(OpenAIError):
            completion_request(body, pb.PRIORITY_NORMAL)


def test_the_priority_header_names_a_priority_or_is_refused() -> None:
    assert priority_of(None) == priority_of("") == pb.PRIORITY_NORMAL
    assert priority_of(" Critical ") == pb.PRIORITY_CRITICAL
    with pytest.raises(OpenAIError) as refused:
        priority_of("urgent")
    assert refused.value.param == "x-meshserve-priority"


def message(text: str = "", finish: int = pb.FINISH_REASON_UNSPECIFIED, usage: tuple[int, int] | None = None):
    reply = pb.GenerateResponse(text=text, model="served", finish_reason=finish)
    if usage:
        reply.usage.input_tokens, reply.usage.output_tokens = usage
    return reply


def test_a_chat_stream_is_role_then_content_then_finish_then_usage() -> None:
    writer = CompletionWriter(chat=True, include_usage=True)
    chunks = writer.chunks(message("Hel"), False) + writer.chunks(message("lo", pb.FINISH_REASON_STOP, (3, 2)), False)
    deltas = [chunk["choices"][0]["delta"] if chunk["choices"] else None for chunk in chunks]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}, None]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert {chunk["model"] for chunk in chunks} == {"served"}


def test_a_gathered_completion_has_the_text_finish_and_legacy_logprobs() -> None:
    writer = CompletionWriter(chat=False, prompt_chars=10)
    first = message(" a")
    first.logprobs.add(token=" a", logprob=-0.5).top_logprobs.add(token=" a", logprob=-0.5)
    last = message("b", pb.FINISH_REASON_LENGTH, (4, 2))
    last.logprobs.add(token="b", logprob=-1.0)
    writer.gather(first)
    writer.gather(last)
    answer = writer.completed(with_logprobs=True)
    (choice,) = answer["choices"]
    assert (answer["object"], choice["text"], choice["finish_reason"]) == ("text_completion", " ab", "length")
    assert choice["logprobs"] == {
        "tokens": [" a", "b"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{" a": -0.5}, {}],
        "text_offset": [10, 12],
    }


def test_mesh_errors_map_to_status_type_param_and_retry_after() -> None:
    full = from_mesh_error(resource_exhausted("QUEUE_FULL", "the queue is full", 0.2))
    assert (full.status, full.type, full.code, full.headers()) == (
        429,
        "rate_limit_error",
        "queue_full",
        {"retry-after": "1"},
    )
    gone = from_mesh_error(unavailable("INFERENCE_UNAVAILABLE", "down", 2.5))
    assert (gone.status, gone.headers()) == (503, {"retry-after": "3"})
    unknown = from_mesh_error(not_found("UNKNOWN_MODEL", "no model named 'x'", model="x"))
    assert (unknown.status, unknown.param, unknown.code) == (404, "model", "model_not_found")
    renamed = from_mesh_error(
        invalid_argument("INVALID_LOGPROBS", "too many", field="logprobs"), {"logprobs": "top_logprobs"}
    )
    assert renamed.envelope()["error"]["param"] == "top_logprobs"


def test_pydantic_locations_become_openai_parameter_names() -> None:
    union_branch = [{"loc": ("body", "messages", 0, "content", "str"), "msg": "Input should be a valid string"}]
    assert from_validation_errors(union_branch).param == "messages[0].content"
    assert from_validation_errors([{"loc": ("body", 7), "type": "json_invalid", "msg": "x"}]).code == "invalid_json"
    assert from_validation_errors([{"loc": ("body",), "msg": "not an object"}]).param is None


def test_credentials_refused_by_the_mesh_are_401_and_403() -> None:
    from services.shared.errors import ErrorKind, MeshError, permission_denied

    missing = from_mesh_error(MeshError("NO_CREDENTIAL", "no key", kind=ErrorKind.UNAUTHENTICATED))
    assert (missing.status, missing.type) == (401, "authentication_error")
    scoped = from_mesh_error(permission_denied("MISSING_SCOPE", "needs inference"))
    assert (scoped.status, scoped.type) == (403, "permission_error")


def test_unknown_fields_are_kept_aside_to_be_named_not_refused() -> None:
    body = chat_body(frobnicate=True, logit_bias=None, service_tier="auto")
    assert body.unknown_fields() == ["frobnicate", "service_tier"]
    assert chat_request(body, pb.PRIORITY_NORMAL).request.model == "m"
