"""Property-based fuzzing of what the mesh takes from callers.

- Request validation (the gateway's conversion and shape checks): any GenerateRequest is either accepted,
  with every value in its documented range, or refused as INVALID_ARGUMENT with a reason, never anything else.
- The OpenAI front's schema and routes: any body, JSON or not, is answered 200 or a 4xx in OpenAI's
  envelope, never a 5xx. The gateway behind it is a stand-in that applies the real gateway checks.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshserve.gateway.v1 import gateway_pb2 as pb

from gateway.convert import to_gateway_request
from gateway.openai.routes import create_app
from services.shared.errors import ErrorKind, MeshError
from services.shared.request_shape import (
    MAX_PENALTY,
    MAX_STOP_SEQUENCE_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TEMPERATURE,
    MAX_TOP_LOGPROBS,
    check_request_shape,
)

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
ANY_FLOAT = st.floats(width=32, allow_nan=True, allow_infinity=True)
NEAR_RANGE_FLOAT = st.floats(min_value=-3, max_value=3, width=32)
SHORT_TEXT = st.text(max_size=12)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def generate_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=draw(SHORT_TEXT), prompt=draw(st.text(max_size=40)))
    for _ in range(draw(st.integers(0, 3))):
        request.messages.add(role=draw(st.one_of(st.sampled_from([0, 1, 2, 3]), INT32)), content=draw(SHORT_TEXT))
    if draw(st.booleans()):
        request.max_tokens = draw(INT32)
    for field in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if draw(st.booleans()):
            setattr(request, field, draw(st.one_of(ANY_FLOAT, NEAR_RANGE_FLOAT)))
    if draw(st.booleans()):
        request.logprobs = draw(st.one_of(st.integers(-2, 25), INT32))
    request.stop.extend(draw(st.lists(st.text(max_size=MAX_STOP_SEQUENCE_CHARS + 2), max_size=MAX_STOP_SEQUENCES + 2)))
    request.priority = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 4]), INT32))
    return request


@FUZZ
@given(generate_requests())
def test_any_generate_request_is_accepted_in_range_or_refused_as_invalid_argument(request: pb.GenerateRequest) -> None:
    try:
        converted = to_gateway_request(request, caller_id="fuzz", request_id="r")
        check_request_shape(converted.generation)
    except MeshError as error:
        assert error.kind is ErrorKind.INVALID_ARGUMENT, error
        assert error.reason and error.reason == error.reason.upper()
        return
    sampling = converted.generation.sampling
    assert converted.generation.prompt or any(message.content for message in converted.generation.messages)
    assert not (converted.generation.prompt and converted.generation.messages)
    if sampling.temperature is not None:
        assert math.isfinite(sampling.temperature) and 0 <= sampling.temperature <= MAX_TEMPERATURE
    if sampling.top_p is not None:
        assert math.isfinite(sampling.top_p) and 0 < sampling.top_p <= 1
    for penalty in (sampling.presence_penalty, sampling.frequency_penalty):
        assert penalty is None or (math.isfinite(penalty) and abs(penalty) <= MAX_PENALTY)
    assert sampling.max_tokens is None or sampling.max_tokens >= 1
    assert sampling.logprobs is None or 0 <= sampling.logprobs <= MAX_TOP_LOGPROBS
    assert len(sampling.stop) <= MAX_STOP_SEQUENCES
    assert all(0 < len(stop) <= MAX_STOP_SEQUENCE_CHARS for stop in sampling.stop)


class CheckingGateway:
    """Stands in for the gateway behind the front, refusing what the real gateway refuses, with its checks."""

    async def generate(self, request: pb.GenerateRequest, timeout: float, identity: str) -> AsyncIterator:
        check_request_shape(to_gateway_request(request, caller_id=identity, request_id="r").generation)
        final = pb.GenerateResponse(text="ok", model=request.model, finish_reason=pb.FINISH_REASON_LENGTH)
        final.usage.input_tokens, final.usage.output_tokens = 3, 2
        yield final

    async def models(self, identity: str, timeout: float = 5.0) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[pb.Model(name="m")])


APP = create_app(CheckingGateway(), request_timeout_seconds=30)

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)  # fmt: skip
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
CHAT_FIELDS = (
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
    "presence_penalty", "frequency_penalty", "n", "stream", "stream_options", "logprobs", "top_logprobs",
    "response_format", "tools", "logit_bias", "fallback_models", "skip_special_tokens", "user",
)  # fmt: skip
COMPLETION_FIELDS = (*CHAT_FIELDS[:14], "prompt", "echo", "suffix", "best_of")
A_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", ""]) | JSON_SCALARS,
     "content": st.text(max_size=20) | JSON_VALUES},
)  # fmt: skip


def bodies(fields: tuple[str, ...], base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with some of its fields replaced, and others added, by anything JSON can hold."""
    changed = st.dictionaries(st.sampled_from(fields), JSON_VALUES | st.lists(A_MESSAGE, max_size=3), max_size=5)
    return changed.map(lambda changes: {**base, **changes})


CHAT_BODIES = bodies(CHAT_FIELDS, {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
COMPLETION_BODIES = bodies(COMPLETION_FIELDS, {"model": "m", "prompt": "Hi", "max_tokens": 2})


async def _post(path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://front") as client:
        return await client.post(path, content=content, headers={"content-type": "application/json", **headers})


def post(path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return asyncio.run(_post(path, content, headers or {}))


def assert_answered_or_refused_in_the_envelope(reply: httpx.Response) -> None:
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["type"] == "invalid_request_error"


@FUZZ
@given(CHAT_BODIES)
def test_any_chat_body_is_served_or_refused_as_a_4xx(body: dict[str, Any]) -> None:
    assert_answered_or_refused_in_the_envelope(post("/v1/chat/completions", json.dumps(body).encode()))


@FUZZ
@given(COMPLETION_BODIES)
def test_any_completion_body_is_served_or_refused_as_a_4xx(body: dict[str, Any]) -> None:
    assert_answered_or_refused_in_the_envelope(post("/v1/completions", json.dumps(body).encode()))


@FUZZ
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_are_refused_as_a_4xx_or_served(content: bytes) -> None:
    assert_answered_or_refused_in_the_envelope(post("/v1/chat/completions", content))


@FUZZ
@given(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
def test_any_priority_header_is_taken_or_refused_as_a_4xx(priority: str) -> None:
    # Printable ASCII: what an HTTP client can send in a header at all.
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}).encode()
    assert_answered_or_refused_in_the_envelope(post("/v1/chat/completions", body, {"x-meshserve-priority": priority}))
