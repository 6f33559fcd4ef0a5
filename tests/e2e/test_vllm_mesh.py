"""A vLLM model beside a llama.cpp model in one mesh: Envoy → gateway → scheduler → inference, all real.

The vLLM model is the tiny random Llama of tests/tiny_llama.py on the CPU build of vLLM.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from services.shared.tls import channel_credentials
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.sse import OpenStream, SseReply, post_generate
from tests.e2e.test_mesh_scheduling import scheduler_state, wait_for
from tests.otlp_receiver import OtlpReceiver
from tests.support import model_entry, requires_vllm, vllm_model_entry

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
        + vllm_model_entry(VLLM_MODEL, tiny_llama, slots=CONCURRENT, context_length=8192)
    )
    with running_mesh(directory, config, traces, {"MESHSERVE_MAX_QUEUE": "16"}) as mesh:
        yield mesh


def generate(mesh: Mesh, model: str, max_tokens: int = TOKENS, **extra) -> SseReply:
    body = {"model": model, "prompt": "hello world", "max_tokens": max_tokens, **extra}
    return post_generate("127.0.0.1", mesh.port("edge_http"), body, timeout=120)


def engine_channel(mesh: Mesh, model: str) -> grpc.Channel:
    """A channel to the model's inference endpoint, as the scheduler would open it."""
    endpoint = next(e for e in scheduler_state(mesh).endpoints if e.endpoint.model == model)
    return grpc.secure_channel(endpoint.endpoint.address, channel_credentials(mesh.identity("scheduler")))


def activity(engine: inference_pb2_grpc.InferenceServiceStub) -> inference_pb2.EngineActivity:
    return engine.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5).model.activity


def test_the_vllm_model_streams_tokens_through_the_whole_mesh(side_by_side: Mesh) -> None:
    reply = generate(side_by_side, VLLM_MODEL, max_tokens=30)
    assert reply.status == 200 and reply.content_type.startswith("text/event-stream")
    assert len(reply.events) > 10, "tokens arrive as server-sent events, one step at a time"
    assert reply.arrivals[-1] > reply.arrivals[0]
    assert reply.events[-1]["finish_reason"] == "FINISH_REASON_LENGTH"
    assert reply.events[-1]["usage"]["output_tokens"] == 30


def test_the_llama_cpp_model_serves_beside_it(side_by_side: Mesh) -> None:
    reply = generate(side_by_side, LLAMA_CPP_MODEL, max_tokens=4)
    assert reply.status == 200
    assert reply.events[-1]["usage"]["output_tokens"] > 0
    _, listed = side_by_side.get_json("/v1/models")
    engines = {model["name"]: model["engine"] for model in listed["models"]}
    assert engines == {LLAMA_CPP_MODEL: "llama_cpp", VLLM_MODEL: "vllm"}


def test_eight_concurrent_requests_are_served_concurrently(side_by_side: Mesh) -> None:
    started = time.monotonic()
    single = generate(side_by_side, VLLM_MODEL)
    one_request = time.monotonic() - started
    assert single.events[-1]["usage"]["output_tokens"] == TOKENS

    peak_running = 0
    watching = threading.Event()

    def watch_engine() -> None:
        nonlocal peak_running
        with engine_channel(side_by_side, VLLM_MODEL) as channel:
            engine = inference_pb2_grpc.InferenceServiceStub(channel)
            while not watching.is_set():
                peak_running = max(peak_running, activity(engine).running_requests)
                time.sleep(0.01)

    watcher = threading.Thread(target=watch_engine)
    watcher.start()
    replies: list[SseReply] = []
    threads = [
        threading.Thread(target=lambda n=n: replies.append(generate(side_by_side, VLLM_MODEL, seed=n)))
        for n in range(CONCURRENT)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_eight = time.monotonic() - started
    watching.set()
    watcher.join()

    assert [reply.status for reply in replies] == [200] * CONCURRENT
    assert all(reply.events[-1]["usage"]["output_tokens"] == TOKENS for reply in replies)
    # vLLM batched them: the engine itself counted several running at once...
    assert peak_running >= 4, f"the engine ran at most {peak_running} at once"
    # ...and all eight took well under eight times one (at most half of it; 1.5-2x is typical here, where
    # a batch of eight still costs a CPU more per step than one sequence does).
    assert all_eight < 4 * one_request, f"8 requests took {all_eight:.2f}s, one took {one_request:.2f}s"


def test_cancelling_mid_stream_aborts_the_request_inside_vllm(side_by_side: Mesh) -> None:
    with engine_channel(side_by_side, VLLM_MODEL) as channel:
        engine = inference_pb2_grpc.InferenceServiceStub(channel)
        body = {"model": VLLM_MODEL, "prompt": "hello", "max_tokens": LONG}
        stream = OpenStream("127.0.0.1", side_by_side.port("edge_http"), body)
        for _ in range(10):
            stream.next_event()
        # The rest of this request would take about a minute; the engine is generating it now.
        assert activity(engine).running_requests == 1
        stream.close()
        wait_for(lambda: activity(engine).running_requests == 0, 10, "vLLM aborting the request")
        assert activity(engine).kv_cache_used_bytes == 0
