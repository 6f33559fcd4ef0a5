"""A scheduler killed mid-work and restarted by the launcher: the work it granted runs on, the new scheduler
learns from the endpoints what is running before it grants (so it never over-admits), the gateways find
it again by themselves, and the window in which requests are refused is measured."""

from __future__ import annotations

import os
import signal
import time

import grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2

from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh
from tests.e2e.sse import SseReply
from tests.e2e.test_mesh_failures import pid_of
from tests.e2e.test_mesh_scheduling import LONG, in_background, queued, scheduler_state, wait_for

SCHEDULER = ("orchestrator.scheduler", "scheduler")
# The launcher restarts a process half a second after it dies, and the endpoints register again within a
# fraction of one; this bound holds with the CPUs busy, and the test prints what it measured.
REFUSES_FOR_AT_MOST_SECONDS = 60.0


def serving_endpoints(mesh: Mesh) -> list[scheduler_pb2.EndpointState]:
    try:
        state = scheduler_state(mesh)
    except grpc.RpcError:
        return []
    return [e for e in state.endpoints if e.health == scheduler_pb2.ENDPOINT_HEALTH_SERVING]


def test_a_restarted_scheduler_counts_the_work_already_running_and_never_over_admits(mesh: Mesh) -> None:
    held = [mesh.open_stream(LONG) for _ in range(2)]
    try:
        for stream in held:
            stream.next_event()
        (endpoint,) = serving_endpoints(mesh)
        assert endpoint.used_slots == endpoint.total_slots == 2
        old_pid = pid_of(mesh, SCHEDULER)
        os.kill(old_pid, signal.SIGKILL)
        # The endpoint registers again with the new scheduler, saying what it runs.
        wait_for(
            lambda: len(serving_endpoints(mesh)) == 1, REFUSES_FOR_AT_MOST_SECONDS, "the endpoint back", every=0.05
        )
        assert pid_of(mesh, SCHEDULER) != old_pid
        # And the gateway has found it again (until then, it refuses with 503 SCHEDULER_UNAVAILABLE).
        mesh.wait_healthy(timeout=REFUSES_FOR_AT_MOST_SECONDS)
        # The work granted before the restart still streams, and the new scheduler counts it as held.
        for stream in held:
            assert "text" in stream.next_event()
        (endpoint,) = serving_endpoints(mesh)
        assert endpoint.used_slots == 2
        # So a new request waits rather than being granted a third slot on a two-slot engine.
        replies: dict[str, SseReply] = {}
        waiting = in_background(mesh, {"prompt": "Hello", "max_tokens": 4}, replies, "waiting")
        wait_for(lambda: queued(mesh) == 1, 60, "the new request to wait", every=0.05)
        held.pop().close()
        # The engine's heartbeat says one request ended: its slot passes to the one that waited.
        waiting.join(timeout=120)
        assert replies["waiting"].status == 200, replies["waiting"].body
        assert replies["waiting"].events[-1]["usage"]["output_tokens"] == 4
    finally:
        for stream in held:
            stream.close()


def test_requests_are_refused_with_a_retry_only_until_the_restarted_scheduler_has_its_endpoints(mesh: Mesh) -> None:
    """The gateways reconnect by themselves; in between, every refusal is UNAVAILABLE (503): come back."""
    old_pid = pid_of(mesh, SCHEDULER)
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    refusals: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        while True:
            assert time.monotonic() - killed_at < REFUSES_FOR_AT_MOST_SECONDS, refusals[-5:]
            try:
                replies = list(stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=30,
                                             metadata=mesh.grpc_auth))  # fmt: skip
                break
            except grpc.RpcError as error:
                details = details_of(error)
                assert details.code == grpc.StatusCode.UNAVAILABLE, details
                refusals.append(details.reason)
            time.sleep(0.05)
    window = time.monotonic() - killed_at
    assert replies[-1].usage.output_tokens == 2
    assert pid_of(mesh, SCHEDULER) != old_pid
    print(f"\nscheduler killed: refused for {window:.2f}s, {len(refusals)} refusals: {sorted(set(refusals))}")
