"""One trace per request, from Envoy to the engine, exported over OTLP/gRPC to a real receiver on loopback."""

from __future__ import annotations

import http.client
import json
import subprocess

from tests.e2e.conftest import MESHSERVE, Mesh
from tests.otlp_receiver import ReceivedSpan
from tests.support import REPO_ROOT

GATEWAY_GENERATE = "/meshserve.gateway.v1.GatewayService/Generate"
SCHEDULER_ACQUIRE = "/meshserve.scheduler.v1.SchedulerService/AcquireSlot"
INFERENCE_GENERATE = "/meshserve.inference.v1.InferenceService/Generate"
SERVER, CLIENT = 2, 3
STATUS_ERROR = 2


def post(mesh: Mesh, body: dict) -> tuple[int, str, bytes]:
    """POSTs to /v1/generate; returns the status, the trace id header and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", mesh.port("edge_http"), timeout=60)
    try:
        connection.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json", **mesh.auth})
        response = connection.getresponse()
        return response.status, response.getheader("x-meshserve-trace-id") or "", response.read()
    finally:
        connection.close()


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [span for span in spans if span.service_name == service and span.name == name]
    assert len(found) == 1, f"{service}/{name}: {[(s.service_name, s.name) for s in spans]}"
    return found[0]


def wait_for_trace(mesh: Mesh, trace_id: str, names: set[tuple[str, str]]) -> list[ReceivedSpan]:
    def complete(spans: list[ReceivedSpan]) -> bool:
        return names <= {(s.service_name, s.name) for s in spans if s.trace_id == trace_id}

    mesh.traces.wait_for(complete, timeout=15)
    return mesh.traces.spans_for_trace(trace_id)


def test_a_rest_request_is_one_trace_from_envoy_to_the_engine(mesh: Mesh) -> None:
    # Values exact in a 32-bit float, which is what the proto carries.
    body = {"prompt": "Hello", "max_tokens": 5, "temperature": 0.5, "top_p": 0.75}
    status, trace_id, reply = post(mesh, body)
    assert status == 200 and len(trace_id) == 32
    usage = json.loads(reply.split(b"data: ")[-1])["usage"]
    spans = wait_for_trace(mesh, trace_id, {
        ("envoy", "ingress"), ("gateway", GATEWAY_GENERATE), ("scheduler", SCHEDULER_ACQUIRE),
        ("scheduler", "scheduler.queue"), ("scheduler", "scheduler.placement"), ("inference", INFERENCE_GENERATE),
        ("inference", "text_completion gemma-3-270m"), ("inference", "prompt_processing"), ("inference", "decode"),
    })  # fmt: skip
    assert {span.trace_id for span in spans} == {trace_id}

    ingress = one(spans, "envoy", "ingress")
    egress = one(spans, "envoy", "router gateway egress")
    gateway = one(spans, "gateway", GATEWAY_GENERATE)
    to_scheduler = one(spans, "gateway", SCHEDULER_ACQUIRE.strip("/"))
    to_inference = one(spans, "gateway", INFERENCE_GENERATE.strip("/"))
    scheduler = one(spans, "scheduler", SCHEDULER_ACQUIRE)
    queue = one(spans, "scheduler", "scheduler.queue")
    placement = one(spans, "scheduler", "scheduler.placement")
    inference = one(spans, "inference", INFERENCE_GENERATE)
    generation = one(spans, "inference", "text_completion gemma-3-270m")
    prompt = one(spans, "inference", "prompt_processing")
    decode = one(spans, "inference", "decode")
    # Each span's parent is the span that called it.
    assert ingress.parent_span_id == ""
    assert egress.parent_span_id == ingress.span_id
    assert gateway.parent_span_id == egress.span_id and gateway.kind == SERVER
    assert to_scheduler.parent_span_id == gateway.span_id and to_scheduler.kind == CLIENT
    assert to_inference.parent_span_id == gateway.span_id and to_inference.kind == CLIENT
    assert scheduler.parent_span_id == to_scheduler.span_id and scheduler.kind == SERVER
    assert queue.parent_span_id == scheduler.span_id and placement.parent_span_id == queue.span_id
    assert inference.parent_span_id == to_inference.span_id and inference.kind == SERVER
    assert generation.parent_span_id == inference.span_id
    assert prompt.parent_span_id == generation.span_id and decode.parent_span_id == generation.span_id

    expected = {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.request.model": "gemma-3-270m",
        "gen_ai.request.max_tokens": 5,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.75,
        "gen_ai.response.finish_reasons": ["length"],
        "gen_ai.usage.input_tokens": usage["input_tokens"],
        "gen_ai.usage.output_tokens": 5,
    }
    for span in (gateway, generation):
        assert {key: span.attributes.get(key) for key in expected} == expected, span.service_name
    assert generation.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert [name for name, _ in generation.events] == ["first_token"]
    assert queue.attributes["meshserve.priority"] == "NORMAL" and "meshserve.queue.wait_seconds" in queue.attributes
    assert placement.attributes["meshserve.endpoint.address"] == f"127.0.0.1:{mesh.port('inference_base')}"
    # The decision is traced with the pressure it was taken under.
    assert placement.attributes["meshserve.pressure.level"] in {"LOW", "NORMAL", "HIGH", "CRITICAL"}
    # Prompts and outputs stay out of traces unless an operator opts in.
    assert not any(key.endswith(("input.messages", "output.messages")) for key in generation.attributes)


def test_a_cancelled_request_is_traced_as_cancelled(mesh: Mesh) -> None:
    stream = mesh.open_stream({"prompt": "Tell me a long story.", "max_tokens": 900})
    stream.next_event()
    trace_id = stream.header("x-meshserve-trace-id")
    stream.close()
    spans = wait_for_trace(
        mesh, trace_id, {("gateway", GATEWAY_GENERATE), ("inference", "text_completion gemma-3-270m")}
    )
    for span in (one(spans, "gateway", GATEWAY_GENERATE), one(spans, "inference", "text_completion gemma-3-270m")):
        assert span.status_code == STATUS_ERROR
        assert span.attributes["error.type"] == "cancelled"


def test_rejected_requests_are_traced_with_their_status(mesh: Mesh) -> None:
    status, trace_id, _ = post(mesh, {"model": "no-such-model", "prompt": "Hello"})
    assert status == 404 and trace_id
    gateway = one(wait_for_trace(mesh, trace_id, {("gateway", GATEWAY_GENERATE)}), "gateway", GATEWAY_GENERATE)
    assert gateway.status_code == STATUS_ERROR
    assert (gateway.attributes["error.type"], gateway.attributes["rpc.grpc.status_code"]) == ("UNKNOWN_MODEL", 5)

    status, trace_id, _ = post(mesh, {"prompt": "lighthouse " * 1500})
    assert status == 400 and trace_id
    spans = wait_for_trace(mesh, trace_id, {("gateway", GATEWAY_GENERATE), ("inference", INFERENCE_GENERATE)})
    for service, name in (("gateway", GATEWAY_GENERATE), ("inference", INFERENCE_GENERATE)):
        span = one(spans, service, name)
        assert span.status_code == STATUS_ERROR
        assert (span.attributes["error.type"], span.attributes["rpc.grpc.status_code"]) == ("PROMPT_TOO_LONG", 3)


def test_meshserve_generate_shows_the_trace_it_made(mesh: Mesh) -> None:
    result = subprocess.run(
        [*MESHSERVE, "generate", "Hello", "--max-tokens", "3", "--show-trace"],
        cwd=REPO_ROOT, env=mesh.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("trace "))
    trace_id = line.split()[1].rstrip(":")
    assert line.endswith(f"/trace/{trace_id}")
    wait_for_trace(
        mesh, trace_id, {("envoy", "ingress"), ("gateway", GATEWAY_GENERATE), ("inference", INFERENCE_GENERATE)}
    )


def test_log_lines_written_for_a_request_carry_its_trace_id(mesh: Mesh) -> None:
    status, trace_id, _ = post(mesh, {"prompt": "Hello", "max_tokens": 3})
    assert status == 200
    for child, logger in (
        ("gateway", "gateway.requests"),
        ("scheduler", "orchestrator.scheduler.requests"),
        ("inference-gemma-3-270m", "services.inference.requests"),
    ):
        lines = [json.loads(line) for line in mesh.log(child).splitlines() if line.startswith("{")]
        request_lines = [line for line in lines if line["logger"] == logger]
        assert request_lines and all("trace_id" in line and "span_id" in line for line in request_lines), child
        assert any(line["trace_id"] == trace_id for line in request_lines), child
