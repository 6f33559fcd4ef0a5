"""Memory-pressure drills on a real mesh: the GPU monitor replays readings this test writes, the scheduler
admits by them, and requests go through Envoy to real llama.cpp engines.

Three models share the drilled device: `small` (one slot, the smallest footprint), `large` (two slots) and
`sleepy` (two slots, kept loaded only 3 s when idle).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc
from meshserve.scheduler.v1 import scheduler_pb2 as spb

from services.shared.tls import channel_credentials
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.openai_support import sdk
from tests.e2e.sse import SseReply
from tests.e2e.test_mesh_scheduling import grant_order, is_a_token, scheduler_state, wait_for
from tests.otlp_receiver import OtlpReceiver
from tests.support import model_entry, write_drill_reading

GIB = 1024**3
DEVICE_TOTAL = 16 * GIB


def drill_config(directory: Path) -> Path:
    models = [("small", 512, 1, -1), ("large", 1024, 2, -1), ("sleepy", 1024, 2, 3)]
    path = directory / "meshserve.toml"
    path.write_text(
        "".join(
            model_entry(name, context_length=context, slots=slots, threads=1, keep_alive_seconds=keep_alive)
            for name, context, slots, keep_alive in models
        )
    )
    return path


class Drill:
    def __init__(self, mesh: Mesh, readings: Path) -> None:
        self.mesh = mesh
        self._readings = readings

    def set_used(self, fraction: float, level: int) -> None:
        """Writes the next reading, and waits until the scheduler has taken the device to `level`."""
        write_reading(self._readings, fraction)
        wait_for(lambda: self.level() == level, 10, f"pressure level {spb.PressureLevel.Name(level)}")

    def level(self) -> int:
        devices = scheduler_state(self.mesh).devices
        return devices[0].pressure_level if devices else 0

    def endpoint(self, model: str) -> spb.EndpointState:
        return next(e for e in scheduler_state(self.mesh).endpoints if e.endpoint.model == model)

    def queued(self) -> int:
        return sum(depth.depth for depth in scheduler_state(self.mesh).queue)

    def read_time(self) -> int:
        """When the monitor took the reading the scheduler last took in, in nanoseconds."""
        return scheduler_state(self.mesh).devices[0].read_time.ToNanoseconds()

    def wait_for_new_readings(self, count: int) -> None:
        """Until the scheduler has taken in `count` readings after now; it reconsiders its queue at each."""
        for _ in range(count):
            seen = self.read_time()
            wait_for(lambda seen=seen: self.read_time() > seen, 10, "the scheduler taking in a new reading")

    def generate(self, model: str, priority: str, max_tokens: int = 4, timeout: float = 120, **extra) -> SseReply:
        body = {"model": model, "prompt": "Name a colour.", "max_tokens": max_tokens, "priority": priority, **extra}
        return self.mesh.post_generate(body, timeout=timeout)

    def in_background(self, replies: dict[str, SseReply], name: str, *args, **kwargs) -> threading.Thread:
        thread = threading.Thread(target=lambda: replies.__setitem__(name, self.generate(*args, **kwargs)))
        thread.start()
        return thread


def write_reading(path: Path, used_fraction: float) -> None:
    write_drill_reading(path, int(used_fraction * DEVICE_TOTAL), DEVICE_TOTAL)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory, traces: OtlpReceiver) -> Iterator[Drill]:
    directory = tmp_path_factory.mktemp("drill")
    readings = directory / "readings.jsonl"
    write_reading(readings, 0.10)
    env = {
        "MESHSERVE_GPU_MONITOR_SOURCE": "replay",
        "MESHSERVE_GPU_MONITOR_REPLAY_FILE": str(readings),
        "MESHSERVE_MAX_QUEUE": "8",
    }
    with running_mesh(directory, drill_config(directory), traces, env) as mesh:
        drill = Drill(mesh, readings)
        # The scheduler's footprints come from the engines; "small" must be the smallest for these drills.
        footprints = {e.endpoint.model: e.memory_footprint_bytes for e in scheduler_state(mesh).endpoints}
        assert footprints["small"] < min(footprints["large"], footprints["sleepy"]), footprints
        yield drill


def served(reply: SseReply) -> bool:
    return reply.status == 200 and bool(reply.events) and "usage" in reply.events[-1]


def test_at_critical_only_high_work_starts_and_only_on_the_smallest_model(drill: Drill) -> None:
    drill.set_used(0.10, spb.PRESSURE_LEVEL_LOW)
    drill.set_used(0.90, spb.PRESSURE_LEVEL_CRITICAL)
    assert served(drill.generate("small", "PRIORITY_HIGH"))
    # Under pressure a request that names a fallback is served by it when its own model may not start.
    fallback = drill.generate("large", "PRIORITY_HIGH", fallback_models=["small"])
    assert served(fallback) and fallback.events[0]["model"] == "small"
    # So is one through the OpenAI API, which names the fallback in its extension field.
    chat = sdk(drill.mesh).chat.completions.create(
        model="large", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=4,
        extra_headers={"x-meshserve-priority": "high"}, extra_body={"fallback_models": ["small"]},
    )  # fmt: skip
    assert chat.model == "small" and chat.usage.completion_tokens > 0

    waiting: dict[str, SseReply] = {}
    threads = [
        drill.in_background(waiting, "high-large", "large", "PRIORITY_HIGH"),
        drill.in_background(waiting, "normal-small", "small", "PRIORITY_NORMAL"),
    ]
    wait_for(lambda: drill.queued() == 2, 10, "both asks waiting")
    # Each reading makes the scheduler reconsider its queue: neither starts while the device stays CRITICAL.
    drill.wait_for_new_readings(2)
    assert drill.queued() == 2 and not waiting
    drill.set_used(0.10, spb.PRESSURE_LEVEL_LOW)
    for thread in threads:
        thread.join(60)
    assert served(waiting["high-large"]) and served(waiting["normal-small"])


def test_at_emergency_new_work_gets_429_and_admitted_work_is_kept_then_drains_by_priority(drill: Drill) -> None:
    drill.set_used(0.10, spb.PRESSURE_LEVEL_LOW)
    long_request = {"model": "small", "prompt": "Count to five hundred.", "max_tokens": 300, "temperature": 0.0}
    running = drill.mesh.open_stream(long_request)
    assert is_a_token(running.next_event())
    drill.set_used(0.90, spb.PRESSURE_LEVEL_CRITICAL)
    waiting: dict[str, SseReply] = {}
    threads = []
    for count, priority in enumerate(("LOW", "NORMAL", "HIGH"), start=1):
        threads.append(drill.in_background(waiting, priority, "small", f"PRIORITY_{priority}"))
        wait_for(lambda count=count: drill.queued() == count, 10, f"the {priority} ask waiting")

    drill.set_used(0.97, spb.PRESSURE_LEVEL_EMERGENCY)
    # Nothing bounds a queued request's wait but its client: one that waited for the emergency to pass
    # would wait out this read, which ends only when the test lowers the pressure below.
    refused = drill.generate("small", "PRIORITY_CRITICAL", timeout=30)
    assert refused.status == 429, refused.body
    body = refused.body.decode()
    assert '"reason":"MEMORY_PRESSURE_EMERGENCY"' in body and "google.rpc.RetryInfo" in body
    # The OpenAI API says the same in its own words: a RateLimitError that says when to come back.
    with pytest.raises(openai.RateLimitError) as limited:
        sdk(drill.mesh).with_options(timeout=30).completions.create(
            model="small", prompt="Name a colour.", max_tokens=4, extra_headers={"x-meshserve-priority": "critical"}
        )
    assert limited.value.code == "memory_pressure_emergency", limited.value.body
    assert int(limited.value.response.headers["retry-after"]) >= 1
    # Refused at the door: the three asks still wait as they did, and the refused one did not join them.
    assert drill.queued() == 3 and not waiting

    # The request admitted before the emergency streams to its end; the queued ones are still queued.
    events = [running.next_event()]
    while "usage" not in events[-1]:
        events.append(running.next_event())
    running.close()
    assert events[-1]["usage"]["output_tokens"] == 300
    assert drill.queued() == 3 and not waiting

    drill.set_used(0.10, spb.PRESSURE_LEVEL_LOW)
    for thread in threads:
        thread.join(60)
    assert all(served(reply) for reply in waiting.values()), {k: (r.status, r.body[:200]) for k, r in waiting.items()}
    # The order the scheduler granted them in, from its own log: when each client read its first token
    # says more about which client thread the busy CPUs ran first.
    assert grant_order(drill.mesh, waiting) == ["HIGH", "NORMAL", "LOW"]


def test_an_idle_model_is_unloaded_after_keep_alive_and_loads_again_on_demand(drill: Drill) -> None:
    drill.set_used(0.10, spb.PRESSURE_LEVEL_LOW)
    wait_for(lambda: not drill.endpoint("sleepy").resident, 15, "sleepy unloading after its keep-alive")
    address = drill.endpoint("sleepy").endpoint.address
    assert engine_state(drill.mesh, address) == inference_pb2.MODEL_STATE_UNLOADED
    _, listed = drill.mesh.get_json("/v1/mesh/models")
    assert {model["name"]: model["state"] for model in listed["models"]}["sleepy"] == "MODEL_STATE_UNLOADED"

    reply = drill.generate("sleepy", "PRIORITY_NORMAL")
    served_at = time.monotonic()
    assert served(reply) and reply.events[-1]["usage"]["output_tokens"] > 0
    assert engine_state(drill.mesh, address) == inference_pb2.MODEL_STATE_READY
    assert drill.endpoint("sleepy").resident
    wait_for(lambda: not drill.endpoint("sleepy").resident, 15, "sleepy unloading again")
    # It stayed loaded for its 3 s keep-alive after serving. A busy machine only makes this wait longer; the
    # second of slack is for the final event reaching this client after the slot was released.
    assert time.monotonic() - served_at >= 2.0
    assert engine_state(drill.mesh, address) == inference_pb2.MODEL_STATE_UNLOADED


def engine_state(mesh: Mesh, address: str) -> int:
    with grpc.secure_channel(address, channel_credentials(mesh.identity("scheduler"))) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5).model.state
