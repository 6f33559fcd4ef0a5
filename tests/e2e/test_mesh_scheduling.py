"""Slots through the whole mesh: freed on disconnect, granted by priority, refused with 429 when the queue is full."""

from __future__ import annotations

import threading
import time
from functools import partial

import grpc
import pytest
from meshserve.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

from tests.e2e.conftest import Mesh
from tests.e2e.sse import OpenStream, SseReply, post_generate
from tests.e2e.test_mesh_metrics import metrics, value

LONG = {"prompt": "Tell me the whole history of the world.", "max_tokens": 900}


def scheduler_state(mesh: Mesh) -> scheduler_pb2.GetSchedulerStateResponse:
    with mesh.channel("scheduler", "cli") as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        return stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=5)


def used_slots(mesh: Mesh) -> int:
    return sum(endpoint.used_slots for endpoint in scheduler_state(mesh).endpoints)


def queued(mesh: Mesh) -> int:
    return sum(depth.depth for depth in scheduler_state(mesh).queue)


def queue_holds(mesh: Mesh, count: int) -> bool:
    return queued(mesh) == count


def inference_free_slots(mesh: Mesh) -> int:
    # The scheduler's identity may read the endpoint's own view of its slots.
    with mesh.channel("inference_base", "scheduler") as channel:
        info = inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(inference_pb2.GetModelInfoRequest())
    return info.model.free_slots


def wait_for(condition, within: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            pytest.fail(f"{what} did not happen within {within}s")
        time.sleep(0.01)
    return time.monotonic() - started


def hold_slots(mesh: Mesh, count: int) -> list[OpenStream]:
    streams = [OpenStream("127.0.0.1", mesh.port("edge_http"), LONG) for _ in range(count)]
    for stream in streams:
        assert stream.next_event()["text"] is not None
    return streams


def in_background(mesh: Mesh, body: dict, replies: dict[str, SseReply], name: str) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: replies.__setitem__(name, post_generate("127.0.0.1", mesh.port("edge_http"), body)),
        daemon=True,
    )
    thread.start()
    return thread


def test_a_client_that_disconnects_frees_its_slot_within_a_second(mesh: Mesh) -> None:
    (stream,) = hold_slots(mesh, 1)
    stream.next_event()
    assert used_slots(mesh) == 1 and inference_free_slots(mesh) == 1
    stream.close()
    assert wait_for(lambda: used_slots(mesh) == 0, 1.0, "the scheduler freeing the slot") < 1.0
    # The inference service itself stopped generating: its slot is free too.
    assert wait_for(lambda: inference_free_slots(mesh) == 2, 1.0, "the engine stopping") < 1.0


def test_waiting_requests_are_served_in_priority_order(mesh: Mesh) -> None:
    first, second = hold_slots(mesh, 2)
    replies: dict[str, SseReply] = {}
    threads = []
    for name in ("LOW", "NORMAL", "HIGH", "CRITICAL"):
        body = {"prompt": "Say one word.", "max_tokens": 3, "priority": f"PRIORITY_{name}"}
        threads.append(in_background(mesh, body, replies, name))
        wait_for(partial(queue_holds, mesh, len(threads)), 5.0, f"{name} being queued")
    # One slot frees up: the waiting requests go through it one by one, most urgent first.
    first.close()
    for thread in threads:
        thread.join(60)
    second.close()
    served_in = sorted(replies, key=lambda name: replies[name].arrivals[0])
    assert served_in == ["CRITICAL", "HIGH", "NORMAL", "LOW"]
    assert all(reply.events[-1]["usage"]["output_tokens"] == 3 for reply in replies.values())
    wait_for(lambda: used_slots(mesh) == 0, 2.0, "every slot being freed")


def test_a_full_queue_is_refused_with_429_and_a_retry_delay(mesh: Mesh) -> None:
    streams = hold_slots(mesh, 2)
    replies: dict[str, SseReply] = {}
    threads = [in_background(mesh, {"prompt": "Hi", "max_tokens": 2}, replies, f"q{n}") for n in range(4)]
    wait_for(lambda: queued(mesh) == 4, 5.0, "the queue filling")
    started = time.monotonic()
    refused = post_generate("127.0.0.1", mesh.port("edge_http"), {"prompt": "Hi", "max_tokens": 2})
    elapsed = time.monotonic() - started
    for stream in streams:
        stream.close()
    for thread in threads:
        thread.join(60)
    assert refused.status == 429
    body = refused.body.decode()
    assert '"reason":"QUEUE_FULL"' in body and "google.rpc.RetryInfo" in body and '"retry_delay"' in body
    assert elapsed < 0.5, f"the refusal took {elapsed:.3f}s"
    # Nothing accepted was lost: every queued request was served in full.
    assert sorted(replies) == ["q0", "q1", "q2", "q3"]
    outcomes = {name: (reply.status, reply.body[:300], reply.events[-1:]) for name, reply in replies.items()}
    assert all(reply.status == 200 and reply.events for reply in replies.values()), outcomes
    assert all(reply.events[-1]["usage"]["output_tokens"] == 2 for reply in replies.values())


def test_a_request_whose_deadline_passes_in_the_queue_never_reaches_an_engine(mesh: Mesh) -> None:
    method = "/meshserve.inference.v1.InferenceService/Generate"
    streams = hold_slots(mesh, 2)
    engine_calls = sum(
        v for (name, labels), v in metrics(mesh, "inference_metrics_base").items()
        if name == "meshserve_rpc_requests_total" and ("method", method) in labels
    )  # fmt: skip
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as expired:
            list(stub.Generate(gateway_pb2.GenerateRequest(prompt="Hi", max_tokens=2), timeout=0.5))
    waited = time.monotonic() - started
    after = metrics(mesh, "inference_metrics_base")
    for stream in streams:
        stream.close()
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited < 1.5
    engine_calls_after = sum(
        v for (name, labels), v in after.items()
        if name == "meshserve_rpc_requests_total" and ("method", method) in labels
    )  # fmt: skip
    assert engine_calls_after == engine_calls
    assert value(after, "meshserve_slots_in_use", model="gemma-3-270m") == 2
    wait_for(lambda: used_slots(mesh) == 0, 2.0, "every slot being freed")
