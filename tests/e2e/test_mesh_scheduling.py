"""Slots through the whole mesh: freed on disconnect, granted by priority, refused with 429 when the queue is full."""

from __future__ import annotations

import json
import threading
import time
from functools import partial

import grpc
import pytest
from meshserve.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

from tests.e2e.conftest import Mesh
from tests.e2e.sse import OpenStream, SseReply
from tests.e2e.test_mesh_metrics import metrics, value
from tests.support import COUNTING_PROMPT, most_tokens_until_idle

# Greedy counting never ends early: left running, this holds its slot for all of its 900 tokens.
LONG = {"prompt": COUNTING_PROMPT, "max_tokens": 900, "temperature": 0.0}


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


def inference_model(mesh: Mesh) -> inference_pb2.ModelInfo:
    # The scheduler's identity may read the endpoint's own view of its slots and its engine.
    with mesh.channel("inference_base", "scheduler") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5).model


def inference_free_slots(mesh: Mesh) -> int:
    return inference_model(mesh).free_slots


def most_tokens_until_the_engine_is_idle(mesh: Mesh) -> int:
    return most_tokens_until_idle(lambda: inference_model(mesh))


def wait_for(condition, within: float, what: str, every: float = 0.01) -> None:
    """Polls `condition` until it holds; `within` is a deadline for a busy machine, not a figure under test.
    `every` spaces the polls of a condition that costs the mesh a request (and an audit record) each time."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within}s")
        time.sleep(every)


def grant_order(mesh: Mesh, replies: dict[str, SseReply]) -> list[str]:
    """The names of the replies in the order the scheduler granted their slots, by their trace ids."""
    names = {reply.trace_id: name for name, reply in replies.items()}
    assert "" not in names, "every served reply names its trace"
    grants = (json.loads(line) for line in mesh.log("scheduler").splitlines() if '"granted ' in line)
    return [names[grant["trace_id"]] for grant in grants if grant.get("trace_id") in names]


def is_a_token(event: dict) -> bool:
    """A message from the middle of a stream: no finish reason and no usage yet."""
    return event["finish_reason"] == "FINISH_REASON_UNSPECIFIED" and "usage" not in event


def hold_slots(mesh: Mesh, count: int) -> list[OpenStream]:
    streams = [mesh.open_stream(LONG) for _ in range(count)]
    for stream in streams:
        assert is_a_token(stream.next_event())  # generating, so holding a slot
    return streams


def in_background(mesh: Mesh, body: dict, replies: dict[str, SseReply], name: str) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: replies.__setitem__(name, mesh.post_generate(body)),
        daemon=True,
    )
    thread.start()
    return thread


def test_a_client_that_disconnects_frees_its_slot_and_stops_the_engine(mesh: Mesh) -> None:
    (stream,) = hold_slots(mesh, 1)
    stream.next_event()
    assert used_slots(mesh) == 1 and inference_free_slots(mesh) == 1
    stream.close()
    wait_for(lambda: used_slots(mesh) == 0, 10.0, "the scheduler freeing the slot")
    # The inference service itself stopped generating, long before the 900 tokens: its slot is free too.
    assert most_tokens_until_the_engine_is_idle(mesh) < LONG["max_tokens"] // 2


def test_waiting_requests_are_served_in_priority_order(mesh: Mesh) -> None:
    first, second = hold_slots(mesh, 2)
    replies: dict[str, SseReply] = {}
    threads = []
    for name in ("LOW", "NORMAL", "HIGH", "CRITICAL"):
        body = {"prompt": "Say one word.", "max_tokens": 3, "priority": f"PRIORITY_{name}"}
        threads.append(in_background(mesh, body, replies, name))
        wait_for(partial(queue_holds, mesh, len(threads)), 15.0, f"{name} being queued")
    # One slot frees up: the waiting requests go through it one by one, most urgent first.
    first.close()
    for thread in threads[1:]:
        thread.join(120)
    # LOW is background work: it starts only once nothing more urgent runs, here once the second stream ends.
    second.close()
    threads[0].join(120)
    assert set(replies) == {"LOW", "NORMAL", "HIGH", "CRITICAL"}
    # The order the scheduler granted them in, from its own log: when each client thread read its first
    # token depends on how the busy CPUs scheduled those threads.
    assert grant_order(mesh, replies) == ["CRITICAL", "HIGH", "NORMAL", "LOW"]
    assert all(reply.events[-1]["usage"]["output_tokens"] == 3 for reply in replies.values())
    wait_for(lambda: used_slots(mesh) == 0, 15.0, "every slot being freed")


def test_a_full_queue_is_refused_with_429_and_a_retry_delay(mesh: Mesh) -> None:
    streams = hold_slots(mesh, 2)
    replies: dict[str, SseReply] = {}
    threads = [in_background(mesh, {"prompt": "Hi", "max_tokens": 2}, replies, f"q{n}") for n in range(4)]
    wait_for(lambda: queued(mesh) == 4, 15.0, "the queue filling")
    # Nothing bounds a queued request's wait but its client: one that joined the queue would wait out the
    # 900-token streams holding the slots, and this read would time out rather than see a 429.
    refused = mesh.post_generate({"prompt": "Hi", "max_tokens": 2}, timeout=30)
    # Refused at the door: the slots are still held and the queue holds the same four.
    assert (used_slots(mesh), queued(mesh), sorted(replies)) == (2, 4, [])
    for stream in streams:
        stream.close()
    for thread in threads:
        thread.join(60)
    assert refused.status == 429
    body = refused.body.decode()
    assert '"reason":"QUEUE_FULL"' in body and "google.rpc.RetryInfo" in body and '"retry_delay"' in body
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
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as expired:
            list(
                stub.Generate(
                    gateway_pb2.GenerateRequest(prompt="Hi", max_tokens=2), timeout=0.5, metadata=mesh.grpc_auth
                )
            )
    after = metrics(mesh, "inference_metrics_base")
    for stream in streams:
        stream.close()
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    engine_calls_after = sum(
        v for (name, labels), v in after.items()
        if name == "meshserve_rpc_requests_total" and ("method", method) in labels
    )  # fmt: skip
    assert engine_calls_after == engine_calls
    assert value(after, "meshserve_slots_in_use", model="gemma-3-270m") == 2
    wait_for(lambda: used_slots(mesh) == 0, 15.0, "every slot being freed")
