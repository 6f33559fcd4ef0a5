"""The OpenAI API on the mesh's edge, driven by the official openai SDK, sync and async.

Real Envoy, real model, real TLS inside the mesh; the SDK is pointed at http://127.0.0.1:PORT/v1 as a user
points it, with no retries.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl

import httpx
import openai
import pytest

from tests.e2e.conftest import Mesh
from tests.e2e.openai_support import MODEL, STORY, async_sdk, raw_stream, sdk
from tests.e2e.test_mesh_scheduling import (
    LONG,
    hold_slots,
    most_tokens_until_the_engine_is_idle,
    queued,
    scheduler_state,
    used_slots,
    wait_for,
)
from tests.e2e.test_mesh_traces import GATEWAY_GENERATE, INFERENCE_GENERATE, SERVER, one, wait_for_trace

FRONT_SPAN = "POST /v1/chat/completions"


def test_models_are_listed_in_openais_shape(mesh: Mesh) -> None:
    models = sdk(mesh).models.list()
    assert [model.id for model in models.data] == [MODEL]
    assert models.data[0].object == "model" and models.data[0].owned_by == "meshserve"
    assert sdk(mesh).models.retrieve(MODEL).id == MODEL
    # meshserve's own listing, with state and slots, moved beside it.
    status, native = mesh.get_json("/v1/mesh/models")
    assert status == 200 and native["models"][0]["total_slots"] == 2


def test_a_chat_completion_answers_with_the_assistants_message_and_exact_usage(mesh: Mesh) -> None:
    reply = sdk(mesh).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=12, temperature=0
    )
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == MODEL
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 12 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 12


def test_messages_may_carry_text_parts_and_a_developer_role(mesh: Mesh) -> None:
    parts = [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "about the sea."}]
    as_parts = sdk(mesh).chat.completions.create(
        model=MODEL, messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}],
        max_tokens=6, temperature=0,
    )  # fmt: skip
    as_text = sdk(mesh).chat.completions.create(
        model=MODEL, max_tokens=6, temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the sea."}],
    )  # fmt: skip
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content
    assert as_parts.usage.prompt_tokens == as_text.usage.prompt_tokens


def test_a_streamed_chat_sends_the_role_then_text_then_the_finish_then_usage_then_done(mesh: Mesh) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 10,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    reply = raw_stream(mesh, "/v1/chat/completions", body)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    *chunks, done = reply.events
    assert done == "[DONE]"
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    first, *middle, finish, usage = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert middle and all(chunk["choices"][0]["finish_reason"] is None for chunk in middle)
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in middle)
    assert finish["choices"][0]["finish_reason"] == "length" and finish["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10

    # The SDK reads the same stream to the same text.
    stream = sdk(mesh).chat.completions.create(**{**body, "temperature": 0})
    pieces = [chunk for chunk in stream]
    assert pieces[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in pieces if c.choices][-1] == "length"


def test_a_text_completion_continues_the_prompt(mesh: Mesh) -> None:
    reply = sdk(mesh).completions.create(model=MODEL, prompt=STORY, max_tokens=16, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text.strip() and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 16

    streamed = sdk(mesh).completions.create(model=MODEL, prompt=STORY, max_tokens=16, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == reply.choices[0].text


def test_the_same_seed_repeats_a_sampled_completion_and_another_seed_does_not(mesh: Mesh) -> None:
    def sample(seed: int) -> str:
        reply = sdk(mesh).completions.create(model=MODEL, prompt=STORY, max_tokens=24, temperature=1.0, seed=seed)
        return reply.choices[0].text

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9, 10))


def test_a_stop_sequence_ends_the_completion_before_it(mesh: Mesh) -> None:
    plain = sdk(mesh).completions.create(model=MODEL, prompt=STORY, max_tokens=24, temperature=0).choices[0].text
    word = plain.split()[2]
    stopped = sdk(mesh).completions.create(model=MODEL, prompt=STORY, max_tokens=24, temperature=0, stop=[word])
    (choice,) = stopped.choices
    assert choice.finish_reason == "stop"
    assert word not in choice.text and plain.startswith(choice.text)


def test_chat_logprobs_name_each_token_with_its_likeliest_alternatives(mesh: Mesh) -> None:
    reply = sdk(mesh).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=5,
        temperature=0, logprobs=True, top_logprobs=3,
    )  # fmt: skip
    content = reply.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(entry.token for entry in content) == reply.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        # Greedy: the chosen token is the likeliest.
        assert entry.top_logprobs[0].token == entry.token and entry.top_logprobs[0].logprob == entry.logprob
        assert bytes(entry.bytes).decode(errors="replace") == entry.token


def test_completion_logprobs_come_in_the_legacy_shape(mesh: Mesh) -> None:
    reply = sdk(mesh).completions.create(model=MODEL, prompt=STORY, max_tokens=4, temperature=0, logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.text_offset[0] == len(STORY)
    assert all(len(top) == 2 for top in logprobs.top_logprobs)


def test_the_openai_api_is_served_over_tls_too(mesh: Mesh) -> None:
    context = ssl.create_default_context(cafile=str(mesh.state_dir / "certs" / "ca.pem"))
    client = openai.OpenAI(
        base_url=f"https://localhost:{mesh.port('edge_https')}/v1", api_key=mesh.api_key, max_retries=0,
        http_client=httpx.Client(verify=context),
    )  # fmt: skip
    reply = client.completions.create(model=MODEL, prompt=STORY, max_tokens=3)
    assert reply.usage.completion_tokens == 3


async def test_four_concurrent_async_streams_are_each_served_in_full(mesh: Mesh) -> None:
    client = async_sdk(mesh)

    async def one_stream(n: int) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Tell me story number {n}."}], max_tokens=8,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        text, usage = "", 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return text, usage

    results = await asyncio.gather(*(one_stream(n) for n in range(4)))
    assert [usage for _, usage in results] == [8, 8, 8, 8]
    assert all(text for text, _ in results)
    models = await client.models.list()
    assert [model.id for model in models.data] == [MODEL]
    await client.close()


async def test_the_async_sdk_completes_and_raises_the_errors_the_sync_one_does(mesh: Mesh) -> None:
    async with async_sdk(mesh) as client:
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0
        )
        text = await client.completions.create(model=MODEL, prompt=STORY, max_tokens=3, stop=["\n"])
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 3
        assert text.object == "text_completion" and text.choices[0].finish_reason in {"stop", "length"}
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.completions.create(model=MODEL, prompt="x", max_tokens=1, n=2)
        assert refused.value.param == "n"


def test_a_priority_header_reaches_the_scheduler(mesh: Mesh) -> None:
    reply = sdk(mesh).with_options(default_headers={"x-meshserve-priority": "high"}).chat.completions.with_raw_response
    raw = reply.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    trace_id = raw.headers["x-meshserve-trace-id"]
    spans = wait_for_trace(mesh, trace_id, {("scheduler", "scheduler.queue")})
    assert one(spans, "scheduler", "scheduler.queue").attributes["meshserve.priority"] == "HIGH"


def test_a_client_that_leaves_a_stream_frees_its_slot_and_stops_the_engine(mesh: Mesh) -> None:
    stream = sdk(mesh).completions.create(
        model=MODEL, prompt=LONG["prompt"], max_tokens=LONG["max_tokens"], temperature=0, stream=True
    )
    chunks = iter(stream)
    next(chunks), next(chunks)
    assert used_slots(mesh) == 1
    stream.close()
    wait_for(lambda: used_slots(mesh) == 0, 10.0, "the scheduler freeing the slot")
    assert most_tokens_until_the_engine_is_idle(mesh) < LONG["max_tokens"] // 2
    assert sum(depth.depth for depth in scheduler_state(mesh).queue) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_queued_gives_up_its_place(mesh: Mesh, stream: bool) -> None:
    held = hold_slots(mesh, 2)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", mesh.port("edge_http"), timeout=30)
        body = {"model": MODEL, "prompt": STORY, "max_tokens": 4, "stream": stream}
        connection.request(
            "POST", "/v1/completions", json.dumps(body), {"content-type": "application/json", **mesh.auth}
        )
        wait_for(lambda: queued(mesh) == 1, 15.0, "the request joining the queue")
        connection.close()
        # Gone from the queue while both slots are still held: nothing else could have taken it out.
        wait_for(lambda: queued(mesh) == 0, 15.0, "the queue letting the request go")
        assert used_slots(mesh) == 2
    finally:
        for stream_held in held:
            stream_held.close()
    wait_for(lambda: used_slots(mesh) == 0, 15.0, "every slot being freed")


def test_an_openai_request_is_one_trace_from_envoy_through_the_front_to_the_engine(mesh: Mesh) -> None:
    raw = sdk(mesh).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, user="alice@example.com"
    )
    trace_id = raw.headers["x-meshserve-trace-id"]
    usage = raw.parse().usage
    spans = wait_for_trace(mesh, trace_id, {
        ("envoy", "ingress"), ("openai", FRONT_SPAN), ("openai", GATEWAY_GENERATE.strip("/")),
        ("gateway", GATEWAY_GENERATE), ("inference", INFERENCE_GENERATE), ("inference", "chat gemma-3-270m"),
    })  # fmt: skip
    assert {span.trace_id for span in spans} == {trace_id}
    ingress, egress = one(spans, "envoy", "ingress"), one(spans, "envoy", "router openai egress")
    front, to_gateway = one(spans, "openai", FRONT_SPAN), one(spans, "openai", GATEWAY_GENERATE.strip("/"))
    gateway = one(spans, "gateway", GATEWAY_GENERATE)
    assert egress.parent_span_id == ingress.span_id
    assert front.parent_span_id == egress.span_id and front.kind == SERVER
    assert to_gateway.parent_span_id == front.span_id
    assert gateway.parent_span_id == to_gateway.span_id
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.max_tokens": 3,
        "gen_ai.response.finish_reasons": ["length"],
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": 3,
    }
    for span in (front, gateway):
        assert {key: span.attributes.get(key) for key in expected} == expected, span.service_name
    # The end user the client names is recorded; identity stays the credential's.
    assert front.attributes["user.id"] == "alice@example.com"


def test_no_special_token_reaches_the_text_unless_asked_for(mesh: Mesh) -> None:
    # The default model answers this prompt, greedily, with its image marker token again and again.
    prompt, marker = "Write a haiku about the sea", "<start_of_image>"
    hidden = sdk(mesh).completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0)
    shown = sdk(mesh).completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, temperature=0, extra_body={"skip_special_tokens": False}
    )
    assert marker in shown.choices[0].text
    assert marker not in hidden.choices[0].text
    assert hidden.usage.completion_tokens == shown.usage.completion_tokens == 6


def front_request_lines(mesh: Mesh) -> list[dict]:
    lines = [json.loads(line) for line in mesh.log("openai").splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "gateway.openai.requests"]


def test_the_front_logs_each_answer_and_refusal_as_a_json_line_naming_its_trace(mesh: Mesh) -> None:
    served = sdk(mesh).completions.with_raw_response.create(model=MODEL, prompt=STORY, max_tokens=2)
    streamed = httpx.post(
        f"{mesh.http}/v1/chat/completions", headers=mesh.auth, timeout=60,
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True},
    )  # fmt: skip
    refused = httpx.post(
        f"{mesh.http}/v1/completions", headers=mesh.auth, timeout=60, json={"model": MODEL, "prompt": "x", "n": 2}
    )
    assert (served.status_code, streamed.status_code, refused.status_code) == (200, 200, 400)
    prompt_tokens = served.parse().usage.prompt_tokens
    expected = {
        served.headers["x-meshserve-trace-id"]: f"completions answered: 2 tokens for {prompt_tokens} prompt tokens",
        streamed.headers["x-meshserve-trace-id"]: "chat.completions answered: 2 tokens",
        refused.headers["x-meshserve-trace-id"]: "completions refused: 400",
    }
    lines = front_request_lines(mesh)
    for trace_id, beginning in expected.items():
        mine = [line for line in lines if line.get("trace_id") == trace_id]
        assert [line["message"][: len(beginning)] for line in mine] == [beginning], (trace_id, mine)
        assert mine[0]["service"] == "openai" and len(mine[0]["span_id"]) == 16


def test_penalties_travel_from_the_sdk_to_the_engine(mesh: Mesh) -> None:
    prompt = "one two one two one two one two one two"

    def greedy(**options: object) -> str:
        reply = sdk(mesh).completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, **options)
        return reply.choices[0].text

    plain, frequency, presence = greedy(), greedy(frequency_penalty=2.0), greedy(presence_penalty=2.0)
    assert frequency != plain and presence != plain
    assert plain.count("one") > frequency.count("one")
    # Greedy and penalised is still deterministic: the difference is the penalty's, not chance's.
    assert greedy(frequency_penalty=2.0) == frequency
