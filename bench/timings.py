"""Latencies the tests leave to the benchmark: how soon the mesh refuses, frees, aborts and hears of a death.

The tests assert what happens (a refusal comes while the slots are still held, a cancelled run stops long
before its end); these are how long it takes on this machine. Each figure is the median of a few tries in
this run, beside a baseline from the same run where a ratio says more than seconds on a noisy machine:

- vLLM batching: eight concurrent requests through the inference service, against one alone;
- cancel to free: a client's cancel until the engine has dropped the sequence, also counted in the
  stream's own token intervals (llama.cpp through the mesh; vLLM on its own service, bench/vllm_timings.py);
- refusal: a 429 while the slots and the queue are full, against a plain round trip through the edge;
- slot free: a stream's last message until the scheduler shows its slot free;
- death heard: SIGKILL of the inference service until the client's stream fails;
- credential check: the ext_authz Check every request waits for (bench/credential_check.py).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from meshserve.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

from bench.credential_check import credential_check
from bench.processes import Mesh
from bench.workload import PROMPT, SEED, distribution
from services.shared.certs import dev_identity
from services.shared.tls import channel_credentials

# Greedy counting never ends early: a stream of this many tokens runs until it is cut.
LONG_TOKENS = 400


@dataclass(frozen=True)
class TimingPlan:
    tries: int
    kills: int
    vllm_tokens: int
    vllm_rounds: int


QUICK_TIMINGS = TimingPlan(tries=3, kills=1, vllm_tokens=48, vllm_rounds=1)
FULL_TIMINGS = TimingPlan(tries=7, kills=3, vllm_tokens=96, vllm_rounds=3)


def until(condition: Callable[[], bool], within: float = 60.0) -> float:
    """Polls `condition` as fast as a round trip allows; the moment it first held."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within}s")
        time.sleep(0.002)
    return time.monotonic()


def median_gap(times: list[float]) -> float:
    return statistics.median(later - earlier for earlier, later in zip(times, times[1:], strict=False))


class MeshProbe:
    """Streams through the TLS edge, and reads the scheduler and the inference endpoint as operators do."""

    def __init__(self, mesh: Mesh) -> None:
        certs = mesh.state_dir / "certs"
        self.credential = (("authorization", f"Bearer {mesh.api_key}"),)
        edge = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
        self._channels = [
            grpc.secure_channel(f"localhost:{mesh.ports['edge_https']}", edge),
            grpc.secure_channel(
                f"127.0.0.1:{mesh.ports['scheduler']}", channel_credentials(dev_identity(certs, "cli"))
            ),
            grpc.secure_channel(
                f"127.0.0.1:{mesh.ports['inference_base']}", channel_credentials(dev_identity(certs, "scheduler"))
            ),
        ]
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self._channels[0])
        self._scheduler = scheduler_pb2_grpc.SchedulerServiceStub(self._channels[1])
        self._inference = inference_pb2_grpc.InferenceServiceStub(self._channels[2])
        self.http_port = mesh.ports["edge_http"]

    def stream(self, max_tokens: int = LONG_TOKENS):
        request = gateway_pb2.GenerateRequest(prompt=PROMPT, max_tokens=max_tokens, temperature=0.0, seed=SEED)
        return self.gateway.Generate(request, timeout=300, metadata=self.credential)

    def state(self) -> scheduler_pb2.GetSchedulerStateResponse:
        return self._scheduler.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=5)

    def engine_idle(self) -> bool:
        model = self._inference.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5).model
        return model.activity.running_requests == 0 and model.free_slots == model.total_slots

    def slots_free(self) -> bool:
        return all(endpoint.used_slots == 0 for endpoint in self.state().endpoints)

    def ready(self) -> bool:
        """Every endpoint serving and idle, as after a restart has settled; False while one is down."""
        serving = scheduler_pb2.ENDPOINT_HEALTH_SERVING
        try:
            endpoints = self.state().endpoints
            return all(e.health == serving and e.used_slots == 0 for e in endpoints) and self.engine_idle()
        except grpc.RpcError:
            return False

    def queued(self) -> int:
        return sum(depth.depth for depth in self.state().queue)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def post(probe: MeshProbe, method: str, path: str, body: dict | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", probe.http_port, timeout=60)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **dict(probe.credential)}
        connection.request(method, path, payload, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def refused_at_the_door(probe: MeshProbe) -> float:
    started = time.monotonic()
    status = post(probe, "POST", "/v1/generate", {"prompt": "Hi", "max_tokens": 2})
    if status != 429:
        raise RuntimeError(f"with every slot and the queue full, a request got {status}, not 429")
    return time.monotonic() - started


def cancel_to_free(call, first_messages: int, freed: Callable[[], bool]) -> tuple[float, float]:
    """Reads a few messages, cancels, and waits for the engine: seconds to free, and the stream's token gap."""
    arrivals = [time.monotonic() for _, _ in zip(range(first_messages), call, strict=False)]
    cancelled = time.monotonic()
    call.cancel()
    return until(freed) - cancelled, median_gap(arrivals)


def cancellations(tries: int, start: Callable[[], object], freed: Callable[[], bool]) -> dict:
    seconds, gaps = zip(*(cancel_to_free(start(), 8, freed) for _ in range(tries)), strict=True)
    return {
        "seconds": distribution(list(seconds)),
        "inter_token_seconds": statistics.median(gaps),
        "in_token_intervals": statistics.median(s / g for s, g in zip(seconds, gaps, strict=True)),
    }


def refusals(probe: MeshProbe, slots: int, max_queue: int, tries: int) -> list[float]:
    """Fills every slot and the whole queue, then times refused requests: each a 429 at the door."""
    holders = [probe.stream() for _ in range(slots)]
    for holder in holders:
        next(holder)
    waiting = [threading.Thread(target=_drain, args=(probe.stream(2),), daemon=True) for _ in range(max_queue)]
    for thread in waiting:
        thread.start()
    try:
        until(lambda: probe.queued() == max_queue)
        refused = [refused_at_the_door(probe) for _ in range(tries)]
    finally:
        for holder in holders:
            holder.cancel()
        for thread in waiting:
            thread.join(120)
    return refused


def _drain(call) -> None:
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass


def slot_free_after_end(probe: MeshProbe, tries: int) -> list[float]:
    seconds = []
    for _ in range(tries):
        _drain(probe.stream(8))
        ended = time.monotonic()
        seconds.append(until(probe.slots_free) - ended)
    return seconds


def death_heard(mesh: Mesh, probe: MeshProbe, kills: int) -> list[float]:
    """SIGKILLs the inference service mid-stream; how long until the client's stream fails."""
    seconds = []
    for _ in range(kills):
        until(lambda: "inference" in mesh.roles() and probe.ready(), within=180)
        pid = mesh.roles()["inference"]
        call = probe.stream()
        next(call)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _drain(call)
        seconds.append(time.monotonic() - killed)
        until(lambda killed_pid=pid: mesh.roles().get("inference", killed_pid) != killed_pid, within=60)
    return seconds


def mesh_timings(mesh: Mesh, slots: int, max_queue: int, plan: TimingPlan) -> dict:
    """Every figure measured through the running mesh; the inference service is killed last."""
    probe = MeshProbe(mesh)
    try:
        round_trips = [timed(lambda: post(probe, "GET", "/v1/mesh/models")) for _ in range(plan.tries)]
        round_trip = statistics.median(round_trips)
        refused = refusals(probe, slots, max_queue, plan.tries)
        freed = slot_free_after_end(probe, plan.tries)
        return {
            "edge_round_trip_seconds": distribution(round_trips),
            "cancel_to_engine_free": cancellations(plan.tries, probe.stream, probe.engine_idle),
            "refusal_seconds": distribution(refused),
            "refusal_in_round_trips": statistics.median(refused) / round_trip,
            "slot_free_after_stream_end_seconds": distribution(freed),
            "slot_free_in_round_trips": statistics.median(freed) / round_trip,
            "credential_check": credential_check(mesh),
            "killed_inference_heard_seconds": distribution(death_heard(mesh, probe, plan.kills)),
        }
    finally:
        probe.close()


def describe(timings: dict) -> str:
    def ms(figures: dict) -> str:
        return f"p50 {1000 * figures['p50']:.1f} ms, p90 {1000 * figures['p90']:.1f} ms"

    mesh, vllm = timings["mesh"], timings["vllm"]
    cancel, check = mesh["cancel_to_engine_free"], mesh["credential_check"]
    lines = [
        "timings (medians of a few tries; ratios to baselines from this run)",
        f"  edge round trip (GET /v1/mesh/models) {ms(mesh['edge_round_trip_seconds'])}",
        f"  refusal at the door (429)            {ms(mesh['refusal_seconds'])}, "
        f"{mesh['refusal_in_round_trips']:.1f}x a round trip",
        f"  slot free after a stream's end       {ms(mesh['slot_free_after_stream_end_seconds'])}, "
        f"{mesh['slot_free_in_round_trips']:.1f}x a round trip",
        f"  cancel to engine free (llama.cpp)    {ms(cancel['seconds'])}, "
        f"{cancel['in_token_intervals']:.1f} token intervals",
        f"  killed inference heard by the client {ms(mesh['killed_inference_heard_seconds'])}",
        f"  credential check (ext_authz, a key)  {ms(check['check_seconds'])}, "
        f"{check['check_to_health_ratio']:.2f}x a gRPC health round trip to the same service",
    ]
    if "skipped" in vllm:
        lines.append(f"  vLLM: skipped, {vllm['skipped']}")
    else:
        batching, aborted = vllm["batching"], vllm["cancel_to_engine_free"]
        lines.append(f"  vLLM: 8 requests at once took {batching['eight_to_one_ratio']:.2f}x one alone "
                     f"({batching['one_seconds']:.2f}s alone)")  # fmt: skip
        lines.append(f"  vLLM cancel to engine free           {ms(aborted['seconds'])}, "
                     f"{aborted['in_token_intervals']:.1f} token intervals")  # fmt: skip
    return "\n".join(lines)
