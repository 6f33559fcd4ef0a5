"""The OpenAI front's routes in process, over a gateway that answers from a script: what they log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb

from gateway.openai.routes import create_app

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


class ScriptedGateway:
    """Answers every request with "ok", two tokens for three, and keeps what it was asked."""

    def __init__(self) -> None:
        self.requests: list[pb.GenerateRequest] = []

    async def generate(self, request: pb.GenerateRequest, timeout: float, identity: str) -> AsyncIterator:
        self.requests.append(request)
        final = pb.GenerateResponse(text="ok", model="m", finish_reason=pb.FINISH_REASON_LENGTH)
        final.usage.input_tokens, final.usage.output_tokens = 3, 2
        yield final

    async def models(self, identity: str, timeout: float = 5.0) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[pb.Model(name="m")])


async def post(gateway: ScriptedGateway, path: str, body: dict) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(gateway, request_timeout_seconds=30))
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
        return await client.post(path, json=body)


async def test_fields_it_does_not_know_are_named_in_a_debug_line_and_the_request_still_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = ScriptedGateway()
    with caplog.at_level(logging.DEBUG, logger="gateway.openai"):
        reply = await post(gateway, "/v1/chat/completions", {**CHAT, "frobnicate": 1, "service_tier": "auto"})
    assert reply.status_code == 200, reply.text
    assert len(gateway.requests) == 1
    (line,) = [record for record in caplog.records if "ignoring fields" in record.getMessage()]
    assert line.levelno == logging.DEBUG
    assert line.getMessage().endswith(": frobnicate, service_tier")


async def test_a_request_of_known_fields_logs_no_ignored_ones(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gateway.openai"):
        reply = await post(ScriptedGateway(), "/v1/chat/completions", {**CHAT, "temperature": 0.5, "user": "u"})
    assert reply.status_code == 200, reply.text
    assert not [record for record in caplog.records if "ignoring fields" in record.getMessage()]


async def test_each_answer_and_refusal_gets_one_line_in_the_request_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.openai.requests"):
        served = await post(ScriptedGateway(), "/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 2})
        refused = await post(ScriptedGateway(), "/v1/completions", {"model": "m", "prompt": "x", "n": 2})
    assert (served.status_code, refused.status_code) == (200, 400)
    lines = [record.getMessage() for record in caplog.records if record.name == "gateway.openai.requests"]
    assert lines[0] == "completions answered: 2 tokens for 3 prompt tokens on m (length)"
    assert lines[1] == "completions refused: 400 invalid_request_error on n (n must be 1: " + (
        "one completion per request is served, not 2)"
    )
    assert len(lines) == 2
