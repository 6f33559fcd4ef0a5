"""Both ends of the slot protocol in one process: the scheduler's servicer and the gateway's clients.

A real grpc.aio server on a loopback port, over the real state machine; only the inference engine is a fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from meshserve.inference.v1 import inference_pb2 as ipb
from meshserve.inference.v1 import inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2_grpc

from gateway.clients import InferenceClients, SchedulerClient
from gateway.core.ports import SlotAsk
from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import EndpointSnapshot, EndpointSpec
from orchestrator.scheduler.core.scheduler import SlotScheduler
from orchestrator.scheduler.endpoint_watcher import EndpointWatcher
from orchestrator.scheduler.monitors import MonitorDirectory
from orchestrator.scheduler.registry import EndpointRegistry
from orchestrator.scheduler.servicer import SchedulerServicer
from orchestrator.scheduler.state_report import StateReporter
from services.shared.domain import FinishReason, GenerationRequest, Priority, SamplingParams, SlotOutcome, Usage
from services.shared.errors import ErrorKind, MeshError, unavailable
from services.shared.grpc_server import create_server
from tests.support import until

SPEC = EndpointSpec("m@e0", "m", "127.0.0.1:1", total_slots=1)


class Scheduler:
    def __init__(self, broker: SlotBroker, server: grpc.aio.Server, client: SchedulerClient) -> None:
        self.broker, self.server, self.client = broker, server, client

    def endpoint(self) -> EndpointSnapshot:
        return self.broker.snapshot().endpoints[0]


@pytest.fixture()
async def scheduler() -> AsyncIterator[Scheduler]:
    broker = SlotBroker(SlotScheduler([SPEC], max_queue=1))
    server = create_server()
    watcher = EndpointWatcher(broker, None)
    reporter = StateReporter(broker, watcher, MonitorDirectory(broker, [], None))
    registry = EndpointRegistry(broker, watcher, lambda model: None)
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(SchedulerServicer(broker, reporter, registry), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = SchedulerClient(f"127.0.0.1:{port}", None)
    try:
        yield Scheduler(broker, server, client)
    finally:
        await client.close()
        await server.stop(None)


def slot_ask(caller: str = "alice") -> SlotAsk:
    return SlotAsk("m", Priority.NORMAL, caller, "r1")


async def test_a_held_slot_is_counted_until_released_with_its_outcome(scheduler: Scheduler) -> None:
    async with scheduler.client.acquire(slot_ask(), timeout=30) as slot:
        assert (slot.grant.model, slot.grant.address) == ("m", SPEC.address)
        assert scheduler.endpoint().used_slots == 1
        await slot.release(SlotOutcome.SUCCEEDED, 0.25)
        await until(lambda: scheduler.endpoint().used_slots == 0, "freed on release")
    assert scheduler.endpoint().latency_ema_seconds == pytest.approx(0.25), "the first-token time arrived"


async def test_a_failure_reported_on_release_counts_against_the_endpoint(scheduler: Scheduler) -> None:
    async with scheduler.client.acquire(slot_ask(), timeout=30) as slot:
        await slot.release(SlotOutcome.FAILED, None)
    await until(lambda: scheduler.endpoint().failure_rate > 0, "the failure counted")
    assert scheduler.endpoint().latency_ema_seconds is None


async def test_a_block_that_ends_without_release_frees_the_slot_without_blame(scheduler: Scheduler) -> None:
    with pytest.raises(RuntimeError):
        async with scheduler.client.acquire(slot_ask(), timeout=30):
            raise RuntimeError("the caller's own bug")
    await until(lambda: scheduler.endpoint().used_slots == 0, "freed")
    assert scheduler.endpoint().failure_rate == 0


async def test_a_caller_that_goes_away_frees_its_slot(scheduler: Scheduler) -> None:
    held = asyncio.Event()

    async def hold_forever() -> None:
        async with scheduler.client.acquire(slot_ask(), timeout=30):
            held.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold_forever())
    await held.wait()
    holder.cancel()
    await until(lambda: scheduler.endpoint().used_slots == 0, "freed after the caller left")


async def test_a_second_caller_waits_and_gets_the_slot_when_the_first_releases(scheduler: Scheduler) -> None:
    async with scheduler.client.acquire(slot_ask("first"), timeout=30) as first:
        waiting = asyncio.create_task(_acquire_and_release(scheduler.client, "second"))
        await until(lambda: sum(scheduler.broker.snapshot().queue_depth_by_priority.values()) == 1, "queued")
        assert not waiting.done()
        await first.release(SlotOutcome.SUCCEEDED, 0.1)
    assert await asyncio.wait_for(waiting, 30) == "m"


async def _acquire_and_release(client: SchedulerClient, caller: str) -> str:
    async with client.acquire(slot_ask(caller), timeout=30) as slot:
        await slot.release(SlotOutcome.SUCCEEDED, 0.1)
        return slot.grant.model


async def test_a_full_queue_is_a_typed_refusal_with_a_retry_delay(scheduler: Scheduler) -> None:
    async with scheduler.client.acquire(slot_ask("first"), timeout=30):
        waiting = asyncio.create_task(_acquire_and_release(scheduler.client, "second"))
        await until(lambda: sum(scheduler.broker.snapshot().queue_depth_by_priority.values()) == 1, "queued")
        with pytest.raises(MeshError) as refused:
            async with scheduler.client.acquire(slot_ask("third"), timeout=30):
                pass
        waiting.cancel()
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED
    assert refused.value.retry_after_seconds is not None and refused.value.retry_after_seconds > 0


async def test_a_wait_past_the_deadline_is_refused(scheduler: Scheduler) -> None:
    async with scheduler.client.acquire(slot_ask("first"), timeout=30):
        with pytest.raises(MeshError) as refused:
            async with scheduler.client.acquire(slot_ask("late"), timeout=0.5):
                pass
    assert refused.value.kind is ErrorKind.DEADLINE_EXCEEDED
    await until(lambda: sum(scheduler.broker.snapshot().queue_depth_by_priority.values()) == 0, "withdrawn")


async def test_the_state_reports_what_the_state_machine_holds(scheduler: Scheduler) -> None:
    async with scheduler.client.acquire(slot_ask(), timeout=30):
        state = await scheduler.client.state()
    assert [(e.endpoint.model, e.used_slots, e.total_slots) for e in state.endpoints] == [("m", 1, 1)]


class ScriptedInference(inference_pb2_grpc.InferenceServiceServicer):
    """Streams two tokens for a prompt; fails like a dead engine after one token for the prompt "die"."""

    def __init__(self) -> None:
        self.requests: list[ipb.GenerateRequest] = []

    async def Generate(self, request: ipb.GenerateRequest, context) -> AsyncIterator[ipb.GenerateResponse]:
        self.requests.append(request)
        yield ipb.GenerateResponse(text="Hel", token_ids=[1])
        if request.prompt == "die":
            raise unavailable("ENGINE_FAILED", "the engine stopped", 1.0)
        usage = ipb.Usage(input_tokens=3, output_tokens=2)
        yield ipb.GenerateResponse(text="lo", token_ids=[2], finish_reason=ipb.FINISH_REASON_LENGTH, usage=usage)


@pytest.fixture()
async def inference() -> AsyncIterator[tuple[ScriptedInference, str]]:
    server, servicer = create_server(), ScriptedInference()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_the_inference_client_streams_chunks_with_usage(inference: tuple[ScriptedInference, str]) -> None:
    servicer, address = inference
    clients = InferenceClients(None)
    request = GenerationRequest(SamplingParams(max_tokens=2, seed=7), "Hi", request_id="r9")
    try:
        chunks = [chunk async for chunk in clients.generate(address, "m", request, timeout=30)]
    finally:
        await clients.close()
    assert [chunk.text for chunk in chunks] == ["Hel", "lo"]
    assert (chunks[-1].finish_reason, chunks[-1].usage) == (FinishReason.LENGTH, Usage(3, 2))
    sent = servicer.requests[0]
    assert (sent.model, sent.prompt, sent.max_tokens, sent.seed, sent.request_id) == ("m", "Hi", 2, 7, "r9")
    assert not sent.HasField("temperature"), "unset sampling stays unset for the engine's default"


async def test_an_endpoint_failure_mid_stream_is_a_typed_error(inference: tuple[ScriptedInference, str]) -> None:
    _, address = inference
    clients = InferenceClients(None)
    received = []
    try:
        with pytest.raises(MeshError) as failed:
            async for chunk in clients.generate(address, "m", GenerationRequest(prompt="die"), timeout=30):
                received.append(chunk.text)
    finally:
        await clients.close()
    assert received == ["Hel"]
    assert (failed.value.kind, failed.value.reason) == (ErrorKind.UNAVAILABLE, "ENGINE_FAILED")


async def test_an_endpoint_that_is_not_there_is_unavailable() -> None:
    clients = InferenceClients(None)
    try:
        with pytest.raises(MeshError) as failed:
            async for _ in clients.generate("127.0.0.1:1", "m", GenerationRequest(prompt="x"), timeout=10):
                pass
    finally:
        await clients.close()
    assert failed.value.kind is ErrorKind.UNAVAILABLE
