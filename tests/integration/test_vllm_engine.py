"""The vLLM engine inside the real inference service, over mTLS: streaming, batching, aborts, usage, health.

The model is a tiny random Llama built offline (tests/tiny_llama.py); vLLM is the CPU build. The model
never emits its end-of-sequence token, so every request runs to its max_tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshserve.inference.v1 import inference_pb2 as pb
from meshserve.inference.v1 import inference_pb2_grpc

from services.shared.certs import ensure_dev_certs
from services.shared.tls import TlsFiles, channel_credentials
from tests.conftest import track, untrack
from tests.support import (
    ServiceProcess,
    engine_is_idle,
    free_port,
    inference_args,
    requires_vllm,
    tokens_in_kv_cache,
    vllm_model_entry,
    wait_until_serving,
)
from tests.tiny_llama import MARKER, MARKER_PROMPT

pytestmark = requires_vllm

SLOTS = 8
KV_CACHE_BYTES = 64 * 2**20
CONTEXT = 2048
# Nearly the whole context: a request that runs for seconds unless aborted.
LONG = 2000


@dataclass
class VllmService:
    address: str
    caller: TlsFiles
    process: ServiceProcess
    model_directory: Path

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self.address, channel_credentials(self.caller))


@pytest.fixture(scope="module")
def vllm_service(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Iterator[VllmService]:
    directory = tmp_path_factory.mktemp("vllm")
    config = directory / "meshserve.toml"
    config.write_text(vllm_model_entry("tiny-llama", tiny_llama, slots=SLOTS, context_length=CONTEXT))
    certs = ensure_dev_certs(directory / "certs", ["inference", "gateway", "scheduler"])
    server = certs["inference"]
    port = free_port()
    tls = ("--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-ca", str(server.ca))
    process = track(ServiceProcess("inference-vllm", inference_args(config, port, *tls), directory / "inference.log"))
    service = VllmService(f"127.0.0.1:{port}", certs["gateway"], process, tiny_llama)
    with grpc.secure_channel(service.address, channel_credentials(service.caller)) as channel:
        wait_until_serving(channel, process, timeout=180)
    yield service
    process.terminate(timeout=60)
    untrack(process)


@pytest.fixture()
async def stub(vllm_service: VllmService) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    async with vllm_service.channel() as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


async def generate(stub: inference_pb2_grpc.InferenceServiceStub, **request) -> list[pb.GenerateResponse]:
    # A bound for a hung engine, not a speed target: vLLM on 2 busy CPU cores is slow to start a new path.
    return [reply async for reply in stub.Generate(pb.GenerateRequest(**request), timeout=180)]


async def activity(stub: inference_pb2_grpc.InferenceServiceStub) -> pb.EngineActivity:
    return (await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)).model.activity


async def most_tokens_until_idle(stub, within: float = 60.0) -> tuple[int, pb.EngineActivity]:
    """Polls until vLLM runs and holds nothing; the most tokens its KV cache held meanwhile, and the idle activity.

    Counted in tokens, not seconds: a request vLLM aborted holds the few blocks it had, while one left
    running fills on toward its max_tokens, however fast or slow the machine is.
    """
    most, deadline = 0, time.monotonic() + within
    while time.monotonic() < deadline:
        model = (await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)).model
        most = max(most, tokens_in_kv_cache(model))
        if engine_is_idle(model):
            return most, model.activity
        await asyncio.sleep(0.02)
    raise AssertionError(f"vLLM was still busy after {within}s: {model.activity}")


async def wait_for_activity(stub, predicate, timeout: float, what: str) -> pb.EngineActivity:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = await activity(stub)
        if predicate(current):
            return current
        await asyncio.sleep(0.02)
    raise AssertionError(f"the engine never showed {what}; last: {current}")


async def test_the_service_is_healthy_and_describes_a_vllm_model(stub, vllm_service: VllmService) -> None:
    async with vllm_service.channel() as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="meshserve.inference.v1.InferenceService"), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    model = (await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)).model
    assert (model.engine, model.state, model.context_length) == ("vllm", pb.MODEL_STATE_READY, CONTEXT)
    # vLLM batches: the service offers its max number of sequences as slots.
    assert model.total_slots == model.free_slots == SLOTS
    # The KV-cache pool is the one vLLM allocated, counted from its blocks: 64 MiB as configured.
    assert 0.9 * KV_CACHE_BYTES <= model.activity.kv_cache_capacity_bytes <= KV_CACHE_BYTES
    assert model.kv_cache_bytes_per_slot == model.activity.kv_cache_capacity_bytes // SLOTS
    weights = (vllm_service.model_directory / "model.safetensors").stat().st_size
    assert model.weights_bytes == weights
    assert model.memory_footprint_bytes == weights + model.activity.kv_cache_capacity_bytes
    assert (model.layer_count, model.kv_head_count, model.head_dim) == (4, 4, 64)


async def test_tokens_stream_as_vllm_yields_them_with_exact_usage(stub, vllm_service: VllmService) -> None:
    from transformers import AutoTokenizer

    prompt = "the quick brown fox"
    replies = await generate(stub, prompt=prompt, max_tokens=40, temperature=0.7, seed=7)
    streamed = [reply for reply in replies if reply.token_ids]
    assert len(streamed) > 10, "tokens arrive one step at a time, not in one piece"
    assert all(reply.finish_reason == pb.FINISH_REASON_UNSPECIFIED for reply in replies[:-1])
    last = replies[-1]
    assert last.finish_reason == pb.FINISH_REASON_LENGTH
    prompt_tokens = AutoTokenizer.from_pretrained(str(vllm_service.model_directory)).encode(prompt)
    assert last.usage.input_tokens == len(prompt_tokens)
    assert last.usage.output_tokens == 40 == sum(len(reply.token_ids) for reply in replies)
    assert "".join(reply.text for reply in replies)

    again = await generate(stub, prompt=prompt, max_tokens=40, temperature=0.7, seed=7)
    # The same tokens; how vLLM groups them into messages depends on how fast they are read.
    tokens = [token for reply in replies for token in reply.token_ids]
    assert [token for reply in again for token in reply.token_ids] == tokens, "the seed makes sampling repeatable"


async def test_a_conversation_is_rendered_with_the_models_chat_template(stub, vllm_service: VllmService) -> None:
    from transformers import AutoTokenizer

    messages = [pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="hello world")]
    replies = await generate(stub, messages=messages, max_tokens=5)
    tokenizer = AutoTokenizer.from_pretrained(str(vllm_service.model_directory))
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello world"}], add_generation_prompt=True, tokenize=False
    )
    assert replies[-1].usage.input_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))
    assert replies[-1].usage.output_tokens == 5


async def test_concurrent_requests_are_batched_by_vllm(stub) -> None:
    peak_running = 0

    async def watch() -> None:
        nonlocal peak_running
        while True:
            peak_running = max(peak_running, (await activity(stub)).running_requests)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(generate(stub, prompt="hello world", max_tokens=160, seed=n) for n in range(8)))
    watcher.cancel()

    assert [replies[-1].usage.output_tokens for replies in results] == [160] * 8
    assert all(sum(len(reply.token_ids) for reply in replies) == 160 for replies in results)
    # vLLM ran them in one batch: the engine itself counted several running at once.
    assert peak_running >= 4, f"the engine ran at most {peak_running} at once"


async def test_cancelling_a_stream_aborts_the_request_inside_vllm(stub) -> None:
    call = stub.Generate(pb.GenerateRequest(prompt="hello", max_tokens=LONG), timeout=60)
    received = 0
    async for reply in call:
        received += len(reply.token_ids)
        if received >= 20:
            break
    busy = await activity(stub)
    assert busy.running_requests == 1 and busy.kv_cache_used_bytes > 0
    call.cancel()
    # vLLM dropped the request itself, long before the end of the 2000 tokens it was generating.
    most, idle = await most_tokens_until_idle(stub)
    assert most < LONG // 2, f"vLLM held {most} tokens of the cancelled request"
    assert idle.kv_cache_used_bytes == 0
    assert await call.code() == grpc.StatusCode.CANCELLED


async def test_a_passed_deadline_aborts_the_request_inside_vllm(stub) -> None:
    async def until_deadline() -> grpc.StatusCode:
        try:
            await generate_with_deadline(stub, seconds=2.0)
        except grpc.aio.AioRpcError as ended:
            return ended.code()
        return grpc.StatusCode.OK

    ending = asyncio.create_task(until_deadline())
    await wait_for_activity(stub, lambda a: a.running_requests == 1, 30, "the request running")
    assert await ending == grpc.StatusCode.DEADLINE_EXCEEDED
    # Aborted at its deadline: vLLM held two seconds' worth of tokens at most, not the 2000 asked for.
    most, idle = await most_tokens_until_idle(stub)
    assert most < LONG // 2, f"vLLM held {most} tokens of the expired request"
    assert idle.kv_cache_used_bytes == 0


async def generate_with_deadline(stub, seconds: float) -> None:
    async for _ in stub.Generate(pb.GenerateRequest(prompt="hello", max_tokens=LONG), timeout=seconds):
        pass


async def test_a_prompt_longer_than_the_context_is_refused_clearly(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await generate(stub, prompt="the quick brown fox " * 1000, max_tokens=4)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await activity(stub)).running_requests == 0


async def test_an_unloaded_model_frees_vllm_and_loads_again_on_demand(stub) -> None:
    unloaded = (await stub.UnloadModel(pb.UnloadModelRequest(), timeout=60)).model
    assert unloaded.state == pb.MODEL_STATE_UNLOADED
    replies = await generate(stub, prompt="hello world", max_tokens=8)
    assert replies[-1].usage.output_tokens == 8
    assert (await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)).model.state == pb.MODEL_STATE_READY


async def test_special_tokens_stay_out_of_the_text_unless_asked_for(stub) -> None:
    request = {"prompt": MARKER_PROMPT, "max_tokens": 8, "temperature": 0.0}
    hidden = await generate(stub, **request)
    shown = await generate(stub, **request, skip_special_tokens=False)
    assert MARKER in "".join(reply.text for reply in shown), "the model no longer generates its marker"
    assert MARKER not in "".join(reply.text for reply in hidden)
    # The same tokens, the marker among them, were generated and counted either way.
    assert [t for r in hidden for t in r.token_ids] == [t for r in shown for t in r.token_ids]
    assert hidden[-1].usage.output_tokens == shown[-1].usage.output_tokens == 8


async def test_logprobs_come_from_vllm_for_every_token(stub) -> None:
    replies = await generate(stub, prompt="hello world", max_tokens=6, temperature=0.0, logprobs=3)
    entries = [entry for reply in replies for entry in reply.logprobs]
    assert len(entries) == sum(len(reply.token_ids) for reply in replies) == 6
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the likeliest, and the alternatives come likeliest first.
        assert entry.top_logprobs[0].logprob == entry.logprob <= 0
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    assert all(not reply.logprobs for reply in await generate(stub, prompt="hello world", max_tokens=3))


async def test_penalties_reach_vllm_and_change_a_greedy_completion(stub) -> None:
    # The model repeats one token again and again after this prompt, greedily.
    def ids(replies) -> list[int]:
        return [token for reply in replies for token in reply.token_ids]

    plain = ids(await generate(stub, prompt=MARKER_PROMPT, max_tokens=48, temperature=0.0))
    frequency = ids(await generate(stub, prompt=MARKER_PROMPT, max_tokens=48, temperature=0.0, frequency_penalty=2.0))
    presence = ids(await generate(stub, prompt=MARKER_PROMPT, max_tokens=48, temperature=0.0, presence_penalty=2.0))
    assert frequency != plain and presence != plain
    # Penalised, the most repeated token is repeated less.
    most = max(set(plain), key=plain.count)
    assert frequency.count(most) < plain.count(most)


def test_sigterm_shuts_vllm_down_cleanly(vllm_service: VllmService) -> None:
    engine_processes = children_of(vllm_service.process.process.pid)
    assert engine_processes, "vLLM runs its engine core in a child process"
    assert vllm_service.process.terminate(timeout=60) == 0
    assert '"message": "stopped"' in vllm_service.process.logs()
    # Python's resource tracker, which vLLM's shared memory starts, ends once it sees its parent gone and
    # has cleaned up: on busy CPUs that is a moment after the exit. Anything left running would stay.
    deadline = time.monotonic() + 30
    while (left := [pid for pid in engine_processes if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes outlived the service: {[command_of(pid) for pid in left]}"


def children_of(pid: int) -> list[int]:
    """The process's descendants: vLLM's EngineCore and the worker it starts. A child is listed under the
    thread that started it, and the model loads on a worker thread, so every thread is read."""
    children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in children_listed(task)]
    return children + [grandchild for child in children for grandchild in children_of(child)]


def children_listed(task: Path) -> list[str]:
    try:
        return (task / "children").read_text().split()
    except FileNotFoundError:  # the thread ended while being read
        return []


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return f"{pid} (gone)"


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
