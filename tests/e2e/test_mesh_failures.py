"""Dying processes: a client hears UNAVAILABLE at once, nothing leaks, the launcher restarts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2

from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh
from tests.e2e.test_mesh_scheduling import (
    LONG,
    is_a_token,
    most_tokens_until_the_engine_is_idle,
    scheduler_state,
    used_slots,
    wait_for,
)
from tests.support import health_status

INFERENCE = ("services.inference", "inference_base")
GATEWAY = ("-m gateway", "gateway")
# A client hears of a killed inference service within this, CPUs busy or not; bench/timings.py measures it.
HEARS_OF_A_DEATH_WITHIN_SECONDS = 5.0


def pid_of(mesh: Mesh, child: tuple[str, str]) -> int:
    module, port = child
    pattern = f"{module} .*--listen 127.0.0.1:{mesh.port(port)}"
    pids = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, pids
    return int(pids[0])


def wait_for_replacement(mesh: Mesh, child: tuple[str, str], old_pid: int) -> None:
    """Until the launcher's replacement serves: a new process whose own health is SERVING, then /healthz."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if pid_of(mesh, child) != old_pid and child_serving(mesh, child[1]) and endpoints_serving(mesh):
                break
        except AssertionError:
            pass
        time.sleep(0.1)
    else:
        pytest.fail(f"{child[0]} was not replaced within 60s")
    mesh.wait_healthy(timeout=60)


def endpoints_serving(mesh: Mesh) -> bool:
    return all(e.health == scheduler_pb2.ENDPOINT_HEALTH_SERVING for e in scheduler_state(mesh).endpoints)


def child_serving(mesh: Mesh, port: str) -> bool:
    with mesh.channel(port, "cli") as channel:
        return health_status(channel) == health_pb2.HealthCheckResponse.SERVING


def test_killing_inference_mid_stream_fails_the_grpc_client_fast_and_is_recovered(mesh: Mesh) -> None:
    pid = pid_of(mesh, INFERENCE)
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stream = gateway_pb2_grpc.GatewayServiceStub(channel).Generate(
            pb.GenerateRequest(prompt="Tell me a very long story.", max_tokens=900), timeout=60, metadata=mesh.grpc_auth
        )
        first = next(stream)
        assert first.finish_reason == pb.FINISH_REASON_UNSPECIFIED and not first.HasField("usage")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as failed:
            for _ in stream:
                pass
        waited = time.monotonic() - killed_at
    details = details_of(failed.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE, details
    # Either word may come first: the gateway's own call breaking, or the scheduler saying the endpoint left.
    assert details.reason in ("INFERENCE_UNAVAILABLE", "ENDPOINT_LOST"), details
    assert waited < HEARS_OF_A_DEATH_WITHIN_SECONDS, f"the client waited {waited:.3f}s"
    wait_for_replacement(mesh, INFERENCE, pid)
    reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 4})
    assert reply.status == 200 and reply.events[-1]["usage"]["output_tokens"] == 4


def test_killing_inference_ends_a_rest_stream_fast_and_new_requests_get_503_until_it_is_back(mesh: Mesh) -> None:
    pid = pid_of(mesh, INFERENCE)
    stream = mesh.open_stream({"prompt": "Tell me a long story.", "max_tokens": 900})
    events = [stream.next_event()]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(EOFError):
        while True:
            events.append(stream.next_event())
    waited = time.monotonic() - killed_at
    stream.close()
    # The stream just ends: every event it sent, the one before the kill included, is a token, and none
    # claims a finish.
    assert events and all(is_a_token(event) for event in events), events
    assert waited < HEARS_OF_A_DEATH_WITHIN_SECONDS, f"the stream ended {waited:.3f}s after the kill"
    # The launcher waits half a second before restarting a process, which then takes seconds to load its
    # model: a request sent as the stream ends finds no endpoint of the model.
    refused = mesh.post_generate({"prompt": "Hello", "max_tokens": 4})
    assert refused.status == 503, refused.body
    assert json.loads(refused.body)["code"] == 14
    wait_for_replacement(mesh, INFERENCE, pid)
    reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 4})
    assert reply.status == 200 and reply.events[-1]["usage"]["output_tokens"] == 4


def test_a_crashed_gateway_leaks_no_slot(mesh: Mesh) -> None:
    gateway_pid = pid_of(mesh, GATEWAY)
    stream = mesh.open_stream(LONG)
    assert is_a_token(stream.next_event())
    assert used_slots(mesh) == 1
    os.kill(gateway_pid, signal.SIGKILL)
    # The slot stream died with the gateway: the scheduler frees the slot, and the engine stops, long
    # before the 900 tokens it was asked for.
    wait_for(lambda: used_slots(mesh) == 0, 10.0, "the scheduler freeing the slot")
    assert most_tokens_until_the_engine_is_idle(mesh) < LONG["max_tokens"] // 2
    stream.close()
    wait_for_replacement(mesh, GATEWAY, gateway_pid)
    reply = mesh.post_generate({"prompt": "Hello", "max_tokens": 4})
    assert reply.status == 200 and reply.events[-1]["usage"]["output_tokens"] == 4
