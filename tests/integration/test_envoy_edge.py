"""The generated edge bootstrap on the real Envoy binary, in front of a real mTLS gRPC gateway stand-in.

The stand-in GatewayService runs in this process on the test event loop, so every blocking call
here (HTTP clients, envoy --mode validate) runs in a thread: a blocked loop would fail Envoy's
one-second health checks.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import random
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from gateway.edge import write_bootstrap
from services.shared.certs import ensure_dev_certs
from services.shared.status_details import details_of
from services.shared.tls import TlsFiles
from tests.integration.edge_support import (
    ENVOY,
    GATEWAY_SERVICE,
    TOKENS,
    Edge,
    Gateway,
    Response,
    client_tls,
    edge_config,
    healthz,
    request,
    sse_events,
    start_edge,
    stop_edge,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan


@pytest.fixture(scope="module")
async def edge(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    directory = tmp_path_factory.mktemp("edge")
    edge = await start_edge(edge_config(certs, descriptor_set, gateway, directory), directory)
    yield edge
    await stop_edge(edge)


@pytest.mark.parametrize("otlp_endpoint", [None, ("otel-collector.observability", 4317)])
async def test_envoy_accepts_the_generated_bootstrap(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path, otlp_endpoint: Any
) -> None:
    config = edge_config(certs, descriptor_set, gateway, tmp_path, otlp_endpoint=otlp_endpoint)
    bootstrap = write_bootstrap(config, tmp_path / "envoy.json")
    validated = await asyncio.to_thread(
        subprocess.run,
        [str(ENVOY), "--mode", "validate", "-c", str(bootstrap), "--disable-hot-restart"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "OK" in validated.stdout + validated.stderr


SCHEMES = pytest.mark.parametrize("scheme", ["http", "https"])


@SCHEMES
async def test_generate_streams_server_sent_events_with_snake_case_json(
    edge: Edge, gateway: Gateway, scheme: str
) -> None:
    body = {
        "model": "gemma-3-270m",
        "prompt": "Hello",
        "max_tokens": 8,
        "temperature": 0.5,
        "priority": "PRIORITY_HIGH",
    }
    # The gateway holds back the rest of its stream until the client has read the first event. Envoy
    # passing the stream on as it comes is the only way the client gets that far: a response buffered to
    # its end would never arrive, and the read would time out.
    loop = asyncio.get_running_loop()
    client_has_the_first_event = asyncio.Event()
    gateway.servicer.holds["Hello"] = client_has_the_first_event

    def first_event_read() -> None:
        loop.call_soon_threadsafe(client_has_the_first_event.set)

    try:
        response = await request(edge, scheme, "POST", "/v1/generate", body, first_event_read)
    finally:
        del gateway.servicer.holds["Hello"]
    assert response.status == 200, response.body
    assert client_has_the_first_event.is_set()
    expected = pb.GenerateRequest(
        model="gemma-3-270m", prompt="Hello", max_tokens=8, temperature=0.5, priority=pb.PRIORITY_HIGH
    )
    assert gateway.servicer.requests[-1] == expected
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.body)
    assert "".join(event["text"] for event in events) == "".join(TOKENS)
    # Zero values are printed too (always_print_primitive_fields), enums by name.
    assert events[0] == {
        "text": "Once",
        "finish_reason": "FINISH_REASON_UNSPECIFIED",
        "model": "gemma-3-270m",
        "logprobs": [],
        "token_count": 1,
    }
    assert events[-1]["finish_reason"] == "FINISH_REASON_LENGTH"
    assert events[-1]["usage"] == {"input_tokens": 2, "output_tokens": len(TOKENS)}


@SCHEMES
async def test_models_answer_json(edge: Edge, scheme: str) -> None:
    response = await request(edge, scheme, "GET", "/v1/mesh/models")
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    (model,) = response.json()["models"]
    assert model["name"] == "gemma-3-270m"
    assert model["state"] == "MODEL_STATE_READY"
    assert model["context_length"] == 2048
    assert model["free_slots"] == 0  # Printed although zero; int64 fields print as strings.
    assert model["memory_footprint_bytes"] == "0"


@SCHEMES
async def test_an_empty_prompt_is_a_400_with_the_status_as_json(edge: Edge, scheme: str) -> None:
    response = await request(edge, scheme, "POST", "/v1/generate", {"prompt": ""})
    assert response.status == 400, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "code": 3,
        "message": "the prompt is empty",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "EMPTY_PROMPT",
                "domain": "meshserve.dev",
                "metadata": {"field": "prompt"},
            }
        ],
    }


async def test_grpc_passes_through_the_plain_listener(edge: Edge) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.http_port}") as channel:
        await check_grpc(channel)


async def test_grpc_passes_through_the_tls_listener(edge: Edge) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=edge.config.server_tls.ca.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{edge.tls_port}", credentials) as channel:
        await check_grpc(channel)


async def check_grpc(channel: grpc.aio.Channel) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    messages = [message async for message in stub.Generate(pb.GenerateRequest(prompt="Hello"), timeout=10)]
    assert "".join(message.text for message in messages) == "".join(TOKENS)
    assert messages[-1].usage.output_tokens == len(TOKENS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await anext(aiter(stub.Generate(pb.GenerateRequest(prompt=""), timeout=10)))
    details = details_of(refused.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_PROMPT")
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflected = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    services = {service.name async for answer in reflected for service in answer.list_services_response.service}
    assert GATEWAY_SERVICE in services


async def test_healthz_follows_the_gateway_health(edge: Edge, gateway: Gateway) -> None:
    try:
        await gateway.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await eventually(lambda status: status == 503, lambda: healthz(edge))
    finally:
        await gateway.health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert await eventually(lambda status: status == 200, lambda: healthz(edge))


async def eventually(accept: Callable[[Any], bool], probe: Callable[[], Any], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accept(await probe()):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_replaced_server_certificate_is_served_without_a_restart(
    edge: Edge, certs: dict[str, TlsFiles]
) -> None:
    # Issue a new edge certificate in place; certs.py replaces files by rename, as Envoy's watch expects.
    edge.config.server_tls.cert.unlink()
    renewed = ensure_dev_certs(edge.config.server_tls.cert.parent, ["edge"])["edge"]
    expected = x509.load_pem_x509_certificate(renewed.cert.read_bytes()).serial_number

    async def served_serial() -> int:
        return await asyncio.to_thread(_served_serial, edge)

    assert await eventually(lambda serial: serial == expected, served_serial)


def _served_serial(edge: Edge) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", edge.tls_port, timeout=10, context=client_tls(edge))
    try:
        connection.connect()
        return x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True)).serial_number
    finally:
        connection.close()


async def test_requests_over_the_rate_limit_get_429_but_healthz_does_not(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    config = edge_config(certs, descriptor_set, gateway, tmp_path, rate_limit_per_second=1, rate_limit_burst=2)
    edge = await start_edge(config, tmp_path)
    try:
        statuses = [(await request(edge, "http", "GET", "/v1/mesh/models")).status for _ in range(6)]
        assert statuses[0] == 200 and 429 in statuses, statuses
        assert await healthz(edge) == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.http_port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            codes = [await grpc_code(stub.ListModels(pb.ListModelsRequest(), timeout=10)) for _ in range(4)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    finally:
        await stop_edge(edge)


async def test_the_edges_own_refusals_take_the_openai_envelope_under_the_openai_paths(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    config = edge_config(certs, descriptor_set, gateway, tmp_path, rate_limit_per_second=1, rate_limit_burst=1)
    edge = await start_edge(config, tmp_path)
    try:
        openai = [await request(edge, "http", "POST", "/v1/chat/completions", {}) for _ in range(6)]
        native = [await request(edge, "http", "POST", "/v1/generate", {"prompt": "Hi"}) for _ in range(6)]
    finally:
        await stop_edge(edge)
    assert first_429(openai)["error"]["type"] == "rate_limit_error"
    assert first_429(openai)["error"]["code"] == "rate_limited"
    native_body = first_429(native)
    assert native_body["details"][0]["reason"] == "RATE_LIMITED" and native_body["code"] == 8


def first_429(responses: list[Response]) -> Any:
    limited = [response for response in responses if response.status == 429]
    assert limited, [response.status for response in responses]
    return limited[0].json()


async def grpc_code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# OTLP span kinds.
SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 2, 3


@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
async def traced_edge(
    certs: dict[str, TlsFiles],
    descriptor_set: Path,
    gateway: Gateway,
    otlp_receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Edge]:
    directory = tmp_path_factory.mktemp("traced-edge")
    host, port = otlp_receiver.endpoint.rsplit(":", 1)
    # A short flush interval: the two spans of one request stay under the batch size (5), so they
    # leave Envoy on its flush timer, as a quiet mesh's spans do.
    config = edge_config(
        certs, descriptor_set, gateway, directory,
        otlp_endpoint=(host, int(port)), trace_flush_interval=datetime.timedelta(milliseconds=200),
    )  # fmt: skip
    edge = await start_edge(config, directory)
    yield edge
    await stop_edge(edge)


def metadata_of(gateway: Gateway, prompt: str) -> dict[str, str]:
    """The metadata of the one Generate call the gateway got with this prompt."""
    servicer = gateway.servicer
    (metadata,) = [servicer.metadata[i] for i, sent in enumerate(servicer.requests) if sent.prompt == prompt]
    return metadata


@SCHEMES
async def test_envoy_traces_a_request_and_the_gateway_continues_its_trace(
    traced_edge: Edge, gateway: Gateway, otlp_receiver: OtlpReceiver, scheme: str
) -> None:
    prompt = f"traced {random.randrange(1 << 30)}"
    response = await request(traced_edge, scheme, "POST", "/v1/generate", {"prompt": prompt})
    assert response.status == 200, response.body
    version, trace_id, parent_id, flags = metadata_of(gateway, prompt)["traceparent"].split("-")
    assert (version, flags) == ("00", "01")  # W3C trace context, sampled.

    def both_envoy_spans(spans: list[ReceivedSpan]) -> bool:
        return {SPAN_KIND_SERVER, SPAN_KIND_CLIENT} <= {s.kind for s in spans if s.trace_id == trace_id}

    await otlp_receiver.wait_for_async(both_envoy_spans, timeout=10)
    spans = otlp_receiver.spans_for_trace(trace_id)
    assert {span.service_name for span in spans} == {"envoy"}
    (ingress,) = [span for span in spans if span.kind == SPAN_KIND_SERVER]
    (upstream,) = [span for span in spans if span.kind == SPAN_KIND_CLIENT]
    # The client's request starts the trace; Envoy's call to the gateway is its child and the gateway's parent.
    assert ingress.parent_span_id == ""
    assert upstream.parent_span_id == ingress.span_id
    assert upstream.span_id == parent_id
    assert ingress.attributes["http.method"] == "POST"
    port = traced_edge.tls_port if scheme == "https" else traced_edge.http_port
    assert ingress.attributes["http.url"] == f"{scheme}://127.0.0.1:{port}/v1/generate"
    assert ingress.attributes["http.status_code"] == "200"
    assert upstream.attributes["upstream_cluster"] == "gateway"


async def test_without_a_collector_envoy_sends_no_trace_context(edge: Edge, gateway: Gateway) -> None:
    prompt = f"untraced {random.randrange(1 << 30)}"
    response = await request(edge, "http", "POST", "/v1/generate", {"prompt": prompt})
    assert response.status == 200, response.body
    assert "traceparent" not in metadata_of(gateway, prompt)
