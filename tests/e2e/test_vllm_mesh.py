"""A vLLM model beside a llama.cpp model in one mesh: Envoy → gateway → scheduler → inference, all real.

The vLLM model is the tiny random Llama of tests/tiny_llama.py on the CPU build of vLLM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from services.shared.tls import channel_credentials
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.openai_support import sdk
from tests.e2e.sse import SseReply
from tests.e2e.test_mesh_scheduling import is_a_token, scheduler_state, wait_for
from tests.otlp_receiver import OtlpReceiver
from tests.support import (
    engine_is_idle,
    model_entry,
    most_tokens_until_idle,
    requires_vllm,
    tokens_in_kv_cache,
    vllm_model_entry,
)
from tests.tiny_llama import MARKER, MARKER_PROMPT

pytestmark = requires_vllm

VLLM_MODEL = "tiny-llama"
LLAMA_CPP_MODEL = "gemma-3-270m"
CONCURRENT = 8
TOKENS = 200
# Nearly all of the vLLM model's 8192-token context: a request that runs for many seconds unless aborted.
LONG = 8000


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver, tiny_llama: Path) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("vllm-mesh")
    config = directory / "meshserve.toml"
    config.write_text(
        model_entry(LLAMA_CPP_MODEL, context_length=512, slots=1, threads=1)
        # The tiny random model makes hundreds of tokens a second per sequence, far more than a real one: a
        # message per token would flood the service's event loop on busy CPUs, so each message carries four.
        + vllm_model_entry(VLLM_MODEL, tiny_llama, slots=CONCURRENT, context_length=8192, stream_interval=4)
    )
    with running_mesh(directory, config, traces, {"MESHSERVE_MAX_QUEUE": "16"}) as mesh:
        yield mesh


def generate(mesh: Mesh, model: str, max_tokens: int = TOKENS, **extra) -> SseReply:
    body = {"model": model, "prompt": "hello world", "max_tokens": max_tokens, **extra}
    return mesh.post_generate(body, timeout=120)


def engine_channel(mesh: Mesh, model: str) -> grpc.Channel:
    """A channel to the model's inference endpoint, as the scheduler would open it."""
    endpoint = next(e for e in scheduler_state(mesh).endpoints if e.endpoint.model == model)
    return grpc.secure_channel(endpoint.endpoint.address, channel_credentials(mesh.identity("scheduler")))


def model_info(engine: inference_pb2_grpc.InferenceServiceStub) -> inference_pb2.ModelInfo:
    # Generous: on busy CPUs a service streaming the tiny model's tokens answers other calls late.
    return engine.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=30).model


def activity(engine: inference_pb2_grpc.InferenceServiceStub) -> inference_pb2.EngineActivity:
    return model_info(engine).activity


def test_the_vllm_model_streams_tokens_through_the_whole_mesh(side_by_side: Mesh) -> None:
    reply = generate(side_by_side, VLLM_MODEL, max_tokens=60)
    assert reply.status == 200 and reply.content_type.startswith("text/event-stream")
    assert len(reply.events) > 10, "tokens arrive as server-sent events, four steps at a time"
    assert reply.events[-1]["finish_reason"] == "FINISH_REASON_LENGTH"
    assert reply.events[-1]["usage"]["output_tokens"] == 60


def test_the_first_token_reaches_the_client_while_vllm_generates_the_rest(side_by_side: Mesh) -> None:
    with engine_channel(side_by_side, VLLM_MODEL) as channel:
        engine = inference_pb2_grpc.InferenceServiceStub(channel)
        assert engine_is_idle(model_info(engine)), "the channel is connected before the request starts"
        # Long enough that vLLM is still at it however late a busy machine lets the client read.
        body = {"model": VLLM_MODEL, "prompt": "hello", "max_tokens": LONG}
        stream = side_by_side.open_stream(body)
        try:
            assert is_a_token(stream.next_event())
            # Streamed, not buffered on the way: vLLM is still at work on this very request.
            busy = model_info(engine)
            assert busy.activity.running_requests == 1 and tokens_in_kv_cache(busy) < LONG
        finally:
            stream.close()
        most_tokens_until_idle(lambda: model_info(engine))


def test_the_openai_api_serves_the_vllm_model_with_logprobs_and_no_special_tokens(side_by_side: Mesh) -> None:
    client = sdk(side_by_side)
    hidden = client.completions.create(model=VLLM_MODEL, prompt=MARKER_PROMPT, max_tokens=6, temperature=0, logprobs=2)
    shown = client.completions.create(
        model=VLLM_MODEL, prompt=MARKER_PROMPT, max_tokens=6, temperature=0, extra_body={"skip_special_tokens": False}
    )
    assert MARKER in shown.choices[0].text and MARKER not in hidden.choices[0].text
    assert hidden.usage.completion_tokens == shown.usage.completion_tokens == 6
    logprobs = hidden.choices[0].logprobs
    assert len(logprobs.token_logprobs) == 6 and all(len(top) == 2 for top in logprobs.top_logprobs)
    chat = client.chat.completions.create(
        model=VLLM_MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5, logprobs=True, top_logprobs=1
    )
    assert chat.model == VLLM_MODEL and len(chat.choices[0].logprobs.content) == 5


def test_openai_penalties_reach_vllm(side_by_side: Mesh) -> None:
    def greedy(**options: object) -> str:
        reply = sdk(side_by_side).completions.create(
            model=VLLM_MODEL, prompt=MARKER_PROMPT, max_tokens=24, temperature=0, **options
        )
        return reply.choices[0].text

    plain = greedy(extra_body={"skip_special_tokens": False})
    assert greedy(frequency_penalty=2.0, extra_body={"skip_special_tokens": False}) != plain
    assert greedy(presence_penalty=2.0, extra_body={"skip_special_tokens": False}) != plain


def test_the_llama_cpp_model_serves_beside_it(side_by_side: Mesh) -> None:
    reply = generate(side_by_side, LLAMA_CPP_MODEL, max_tokens=4)
    assert reply.status == 200
    assert reply.events[-1]["usage"]["output_tokens"] > 0
    _, listed = side_by_side.get_json("/v1/mesh/models")
    engines = {model["name"]: model["engine"] for model in listed["models"]}
    assert engines == {LLAMA_CPP_MODEL: "llama_cpp", VLLM_MODEL: "vllm"}


def vllm_slots_in_use(mesh: Mesh) -> int:
    return next(e.used_slots for e in scheduler_state(mesh).endpoints if e.endpoint.model == VLLM_MODEL)


def test_eight_concurrent_requests_are_served_concurrently(side_by_side: Mesh) -> None:
    # Shown by order, not by timing: each request runs for thousands of tokens, and every one of them has
    # streamed its first token while none has finished. Served one after another, the second could not
    # start before the first ended. That vLLM itself batches them is shown by its own running count in
    # tests/integration/test_vllm_engine.py.
    body = {"model": VLLM_MODEL, "prompt": "hello world", "max_tokens": LONG}
    streams = [side_by_side.open_stream({**body, "seed": n}) for n in range(CONCURRENT)]
    try:
        assert all(is_a_token(stream.next_event()) for stream in streams)
        # Every slot of the vLLM endpoint is held at once, and each stream is still producing tokens.
        assert vllm_slots_in_use(side_by_side) == CONCURRENT
        assert all(is_a_token(stream.next_event()) for stream in streams)
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: vllm_slots_in_use(side_by_side) == 0, 60.0, "closing the streams freeing every slot")


def test_cancelling_mid_stream_aborts_the_request_inside_vllm(side_by_side: Mesh) -> None:
    with engine_channel(side_by_side, VLLM_MODEL) as channel:
        engine = inference_pb2_grpc.InferenceServiceStub(channel)
        body = {"model": VLLM_MODEL, "prompt": "hello", "max_tokens": LONG}
        stream = side_by_side.open_stream(body)
        for _ in range(10):
            stream.next_event()
        # The rest of this request would take about a minute; the engine is generating it now.
        assert activity(engine).running_requests == 1
        stream.close()
        # vLLM dropped it, long before the end of its 8000 tokens.
        assert most_tokens_until_idle(lambda: model_info(engine)) < LONG // 2
        assert activity(engine).kv_cache_used_bytes == 0
