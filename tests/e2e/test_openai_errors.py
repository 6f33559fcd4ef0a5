"""Failures on the OpenAI surface: OpenAI's envelope with the right status for every bad input, the queue,
a deadline, unknown paths and methods; and a stream whose engine dies ends with an error event and [DONE]."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.openai_support import MODEL, STORY, raw_post, raw_stream, sdk
from tests.e2e.test_mesh_failures import INFERENCE, pid_of, wait_for_replacement
from tests.e2e.test_mesh_scheduling import hold_slots, queued, used_slots, wait_for

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
COMPLETION = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}


def chat(**changes) -> dict:
    return {**CHAT, **changes}


def without(body: dict, key: str) -> dict:
    return {name: value for name, value in body.items() if name != key}


# (what is wrong, path, body, extra headers, expected status, expected param or None)
BAD_INPUTS = [
    ("not JSON", "/v1/chat/completions", b"{not json", {}, 400, None),
    ("a JSON array", "/v1/chat/completions", b"[1, 2]", {}, 400, None),
    ("no model", "/v1/chat/completions", without(CHAT, "model"), {}, 400, "model"),
    ("no messages", "/v1/chat/completions", without(CHAT, "messages"), {}, 400, "messages"),
    ("no messages in the list", "/v1/chat/completions", chat(messages=[]), {}, 400, "messages"),
    ("messages not a list", "/v1/chat/completions", chat(messages="Hi"), {}, 400, "messages"),
    ("an unknown role", "/v1/chat/completions", chat(messages=[{"role": "robot", "content": "Hi"}]), {}, 400,
     "messages[0].role"),
    ("content a number", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), {}, 400,
     "messages[0].content"),
    ("an image part", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), {}, 400,
     "messages[0].content"),
    ("every message empty", "/v1/chat/completions", chat(messages=[{"role": "user", "content": ""}]), {}, 400,
     "messages"),
    ("temperature a word", "/v1/chat/completions", chat(temperature="hot"), {}, 400, "temperature"),
    ("temperature above 2", "/v1/chat/completions", chat(temperature=3), {}, 400, "temperature"),
    ("temperature beyond a float", "/v1/chat/completions", chat(temperature=1e39), {}, 400, "temperature"),
    ("top_p zero", "/v1/chat/completions", chat(top_p=0), {}, 400, "top_p"),
    ("top_p above 1", "/v1/chat/completions", chat(top_p=1.5), {}, 400, "top_p"),
    ("max_tokens zero", "/v1/chat/completions", chat(max_tokens=0), {}, 400, "max_tokens"),
    ("max_tokens negative", "/v1/chat/completions", chat(max_tokens=-5), {}, 400, "max_tokens"),
    ("max_tokens past the context", "/v1/chat/completions", chat(max_tokens=10**6), {}, 400, "max_tokens"),
    ("max_tokens past int32", "/v1/chat/completions", chat(max_tokens=10**12), {}, 400, "max_tokens"),
    ("max_completion_tokens zero", "/v1/chat/completions", chat(max_completion_tokens=0), {}, 400,
     "max_completion_tokens"),
    ("n of 2", "/v1/chat/completions", chat(n=2), {}, 400, "n"),
    ("n of 0", "/v1/chat/completions", chat(n=0), {}, 400, "n"),
    ("nine stop sequences", "/v1/chat/completions", chat(stop=[str(n) for n in range(9)]), {}, 400, "stop"),
    ("an empty stop sequence", "/v1/chat/completions", chat(stop=[""]), {}, 400, "stop"),
    ("presence_penalty above 2", "/v1/chat/completions", chat(presence_penalty=3), {}, 400, "presence_penalty"),
    ("frequency_penalty below -2", "/v1/chat/completions", chat(frequency_penalty=-2.5), {}, 400,
     "frequency_penalty"),
    ("top_logprobs above 20", "/v1/chat/completions", chat(logprobs=True, top_logprobs=30), {}, 400,
     "top_logprobs"),
    ("top_logprobs without logprobs", "/v1/chat/completions", chat(top_logprobs=2), {}, 400, "top_logprobs"),
    ("a negative seed", "/v1/chat/completions", chat(seed=-1), {}, 400, "seed"),
    ("stream a word", "/v1/chat/completions", chat(stream="yes"), {}, 400, "stream"),
    ("stream_options without stream", "/v1/chat/completions", chat(stream_options={"include_usage": True}), {},
     400, "stream_options"),
    ("tools", "/v1/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f"}}]), {}, 400,
     "tools"),
    ("a JSON response format", "/v1/chat/completions", chat(response_format={"type": "json_object"}), {}, 400,
     "response_format"),
    ("an unknown priority", "/v1/chat/completions", CHAT, {"x-meshserve-priority": "urgent"}, 400,
     "x-meshserve-priority"),
    ("a timeout that is no number", "/v1/chat/completions", CHAT, {"x-meshserve-timeout-seconds": "soon"}, 400,
     "x-meshserve-timeout-seconds"),
    ("a prompt longer than the context", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": "word " * 3000}]), {}, 400, "messages"),
    ("an unknown model", "/v1/chat/completions", chat(model="no-such-model"), {}, 404, "model"),
    ("an unknown fallback model", "/v1/chat/completions", chat(fallback_models=["nope"]), {}, 404, "model"),
    ("a completion without a prompt", "/v1/completions", without(COMPLETION, "prompt"), {}, 400, "prompt"),
    ("two prompts", "/v1/completions", {**COMPLETION, "prompt": ["a", "b"]}, {}, 400, "prompt"),
    ("completion logprobs above 5", "/v1/completions", {**COMPLETION, "logprobs": 6}, {}, 400, "logprobs"),
    ("echo", "/v1/completions", {**COMPLETION, "echo": True}, {}, 400, "echo"),
    ("best_of 3", "/v1/completions", {**COMPLETION, "best_of": 3}, {}, 400, "best_of"),
    ("invalid UTF-8", "/v1/chat/completions",
     b'{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "\xc3\x28"}]}', {}, 400, None),
    ("JSON nested 10,000 deep", "/v1/chat/completions",
     b'{"model": "gemma-3-270m", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", {}, 400, None),
    ("a JSON string", "/v1/chat/completions", b'"hello"', {}, 400, None),
    ("20,000 messages", "/v1/chat/completions", chat(messages=[{"role": "user", "content": "Hi"}] * 20_000), {},
     400, "messages"),
    ("messages null", "/v1/chat/completions", chat(messages=None), {}, 400, "messages"),
    ("the model a number", "/v1/chat/completions", chat(model=7), {}, 400, "model"),
    ("content null", "/v1/chat/completions", chat(messages=[{"role": "user", "content": None}]), {}, 400,
     "messages[0].content"),
    ("role null", "/v1/chat/completions", chat(messages=[{"role": None, "content": "Hi"}]), {}, 400,
     "messages[0].role"),
    ("max_tokens a fraction", "/v1/chat/completions", chat(max_tokens=1.5), {}, 400, "max_tokens"),
    ("stop a number", "/v1/chat/completions", chat(stop=5), {}, 400, "stop"),
    ("temperature NaN", "/v1/chat/completions",
     b'{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}', {}, 400,
     "temperature"),
    ("logprobs a word", "/v1/chat/completions", chat(logprobs="yes"), {}, 400, "logprobs"),
    ("a completion prompt a number", "/v1/completions", {**COMPLETION, "prompt": 5}, {}, 400, "prompt"),
    ("a batch without a file", "/v1/batches", {"endpoint": "/v1/chat/completions", "completion_window": "24h"}, {},
     400, "input_file_id"),
    ("a batch of an unknown file", "/v1/batches",
     {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}, {}, 404,
     "input_file_id"),
    ("cancelling an unknown batch", "/v1/batches/batch_nope/cancel", {}, {}, 404, None),
    ("a file upload that is not multipart", "/v1/files", {"purpose": "batch"}, {}, 400, "file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("wrong", "path", "body", "headers", "status", "param"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_a_bad_input_gets_a_4xx_in_openais_envelope_naming_the_parameter(
    mesh: Mesh, wrong: str, path: str, body, headers: dict, status: int, param: str | None
) -> None:
    reply = raw_post(mesh, path, body, headers)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_after_every_bad_input_the_mesh_still_serves(mesh: Mesh) -> None:
    assert len(BAD_INPUTS) >= 50
    reply = sdk(mesh).chat.completions.create(**CHAT)
    assert reply.usage.completion_tokens == 2
    assert mesh.healthy()


def test_fields_neither_openai_nor_meshserve_knows_are_ignored(mesh: Mesh) -> None:
    reply = raw_post(mesh, "/v1/chat/completions", chat(frobnicate={"deeply": ["nested"]}, service_tier="auto"))
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 2


def test_the_sdk_raises_its_own_error_types(mesh: Mesh) -> None:
    client = sdk(mesh)
    with pytest.raises(openai.BadRequestError) as two:
        client.chat.completions.create(**chat(n=2))
    assert two.value.status_code == 400 and two.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(**chat(model="no-such-model"))
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.BadRequestError) as hot:
        client.completions.create(model=MODEL, prompt="Hi", temperature=9)
    assert hot.value.body == {
        "message": "temperature must be in [0, 2.0], got 9.0",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "invalid_temperature",
    }


def test_a_full_queue_is_a_rate_limit_error_with_retry_after(mesh: Mesh) -> None:
    streams = hold_slots(mesh, 2)
    answers: list[int] = []

    def wait_in_queue() -> None:
        answers.append(sdk(mesh).completions.create(**COMPLETION).usage.completion_tokens)

    threads = [threading.Thread(target=wait_in_queue, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: queued(mesh) == 4, 15.0, "the queue filling")
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(mesh).completions.create(**COMPLETION)
    assert (used_slots(mesh), queued(mesh)) == (2, 4), "refused at the door"
    for stream in streams:
        stream.close()
    for thread in threads:
        thread.join(60)
    response = refused.value.response
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert refused.value.body["type"] == "rate_limit_error" and refused.value.body["code"] == "queue_full"
    # Nothing accepted was lost.
    assert answers == [2, 2, 2, 2]


def test_a_deadline_that_passes_in_the_queue_is_a_504(mesh: Mesh) -> None:
    streams = hold_slots(mesh, 2)
    try:
        reply = raw_post(mesh, "/v1/completions", COMPLETION, {"x-meshserve-timeout-seconds": "1"})
    finally:
        for stream in streams:
            stream.close()
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["type"] == "timeout_error"
    wait_for(lambda: used_slots(mesh) == 0, 15.0, "every slot being freed")


@pytest.mark.parametrize(
    ("method", "path", "status", "shape"),
    [
        ("GET", "/v1/chat/completions", 405, "openai"),
        ("DELETE", "/v1/models", 405, "openai"),
        ("POST", "/v1/models/gemma-3-270m", 405, "openai"),
        ("POST", "/v1/embeddings", 404, "openai"),
        ("GET", "/v1/chat/nothing", 404, "openai"),
        ("GET", "/v1/generate", 405, "status"),
        ("POST", "/v1/mesh/models", 405, "status"),
        ("PUT", "/v1/gpu/status", 405, "status"),
        ("POST", "/v1/nope", 404, "status"),
        ("GET", "/", 404, "status"),
    ],
)
def test_unknown_paths_and_wrong_methods_are_answered_by_the_edge_itself(
    mesh: Mesh, method: str, path: str, status: int, shape: str
) -> None:
    reply = httpx.request(method, f"{mesh.http}{path}", headers=mesh.auth, timeout=30)
    assert reply.status_code == status and reply.headers["content-type"] == "application/json"
    assert "x-envoy-upstream-service-time" not in reply.headers, "answered by Envoy, not forwarded"
    body = reply.json()
    if shape == "openai":
        assert body["error"]["type"] == "invalid_request_error" and path in body["error"]["message"]
    else:
        assert body["code"] == (12 if status == 405 else 5) and path in body["message"]
        assert body["details"][0]["reason"] == ("METHOD_NOT_ALLOWED" if status == 405 else "UNKNOWN_PATH")
    if status == 405:
        assert reply.headers["allow"] in {"GET", "POST"}


# A killed inference service fails its streams in one of two ways, whichever the gateway hears of first:
# the stream itself breaks, or the scheduler reports the endpoint gone as its registration closes.
ENGINE_DIED = {"inference_unavailable", "endpoint_lost"}


def test_an_engine_that_dies_mid_stream_ends_the_stream_with_an_error_event_then_done(mesh: Mesh) -> None:
    pid = pid_of(mesh, INFERENCE)
    killed: list[float] = []

    def kill() -> None:
        os.kill(pid, signal.SIGKILL)
        killed.append(time.monotonic())

    body = {**COMPLETION, "prompt": STORY, "max_tokens": 900, "stream": True}
    reply = raw_stream(mesh, "/v1/completions", body, on_first_event=kill)
    assert reply.status == 200 and killed
    *tokens, failure, done = reply.events
    assert done == "[DONE]"
    assert tokens and all(event["object"] == "text_completion" for event in tokens)
    assert all(event["choices"][0]["finish_reason"] is None for event in tokens), "no false finish"
    assert failure["error"]["type"] == "service_unavailable_error"
    assert failure["error"]["code"] in ENGINE_DIED
    # The launcher waits half a second before restarting it, which then takes seconds to load its model:
    # a request sent as the stream ends finds no endpoint of the model.
    refused = raw_post(mesh, "/v1/completions", COMPLETION)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["type"] == "service_unavailable_error"
    assert int(refused.headers["retry-after"]) >= 1
    wait_for_replacement(mesh, INFERENCE, pid)

    # The SDK reads the error event as an APIError rather than a silent end.
    pid = pid_of(mesh, INFERENCE)
    stream = sdk(mesh).completions.create(**{**body, "stream": True})
    chunks = iter(stream)
    next(chunks)
    os.kill(pid, signal.SIGKILL)
    try:
        with pytest.raises(openai.APIError, match="inference|left the mesh"):
            for _ in chunks:
                pass
    finally:
        # The tests after this one share the mesh: it is left serving as it was found.
        wait_for_replacement(mesh, INFERENCE, pid)
