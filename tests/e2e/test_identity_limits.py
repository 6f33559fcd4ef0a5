"""Per-key limits on the real mesh: requests and tokens per minute, requests at once and the priority ceiling,
answered 429 with Retry-After and x-ratelimit-* headers on every surface, and held across gateway replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.identity import IDENTITY_HEADER, CallerLimits, Identity, Scope, Surface, encode_identity
from services.shared.status_details import details_of
from services.shared.tls import channel_credentials
from tests.e2e.conftest import Mesh
from tests.e2e.identity_support import bearer, create_key
from tests.e2e.sse import OpenStream
from tests.e2e.test_identity import caller_of, grpc_generate
from tests.e2e.test_mesh_scheduling import LONG, is_a_token
from tests.ports import free_port
from tests.support import ServiceProcess, wait_until_serving

SHORT = {"prompt": "Hi", "max_tokens": 2}


def test_a_key_past_its_requests_per_minute_gets_429_with_the_limits_on_every_surface(mesh: Mesh) -> None:
    _, key = create_key(mesh, "--scopes", "inference", "--rpm", "2")
    assert mesh.post_generate(SHORT, headers=bearer(key)).status == 200
    assert mesh.post_generate(SHORT, headers=bearer(key)).status == 200

    refused = httpx.post(f"{mesh.http}/v1/generate", json=SHORT, headers=bearer(key), timeout=30)
    assert refused.status_code == 429, refused.text
    assert refused.json()["details"][0]["reason"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")

    client = openai.OpenAI(base_url=f"{mesh.http}/v1", api_key=key, max_retries=0, timeout=30)
    with pytest.raises(openai.RateLimitError) as limited:
        client.completions.create(model="gemma-3-270m", prompt="Hi", max_tokens=2)
    assert limited.value.body["code"] == "rate_limited"
    assert limited.value.response.headers["x-ratelimit-limit-requests"] == "2"
    assert int(limited.value.response.headers["retry-after"]) >= 1

    with pytest.raises(grpc.RpcError) as exhausted:
        grpc_generate(mesh, key)
    details = details_of(exhausted.value)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert details.retry_after_seconds and details.retry_after_seconds > 0


def test_tokens_per_minute_are_counted_from_real_usage(mesh: Mesh) -> None:
    _, key = create_key(mesh, "--scopes", "inference", "--tpm", "10")
    served = mesh.post_generate({"prompt": "Once upon a time", "max_tokens": 8}, headers=bearer(key))
    usage = served.events[-1]["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] >= 10
    refused = httpx.post(f"{mesh.http}/v1/generate", json=SHORT, headers=bearer(key), timeout=30)
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.json()["details"][0]["metadata"]["limit"] == "tokens"


def test_a_key_at_its_concurrency_cap_is_refused_until_a_request_ends(mesh: Mesh) -> None:
    _, key = create_key(mesh, "--scopes", "inference", "--max-concurrent", "1")
    held = OpenStream("127.0.0.1", mesh.port("edge_http"), LONG, headers=bearer(key))
    try:
        assert is_a_token(held.next_event())
        refused = httpx.post(f"{mesh.http}/v1/generate", json=SHORT, headers=bearer(key), timeout=30)
        assert refused.status_code == 429 and refused.json()["details"][0]["metadata"]["limit"] == "concurrency"
    finally:
        held.close()


def test_a_key_asking_above_its_ceiling_is_served_at_its_ceiling(mesh: Mesh) -> None:
    key_id, key = create_key(mesh, "--scopes", "inference", "--max-priority", "LOW")
    reply = mesh.post_generate({**SHORT, "priority": "PRIORITY_CRITICAL"}, headers=bearer(key))
    assert reply.status == 200
    assert caller_of(mesh, reply.trace_id) == f"key:{key_id}"
    grant = next(line for line in mesh.log("scheduler").splitlines() if reply.trace_id in line and "granted" in line)
    assert f"to key:{key_id} at LOW" in grant


@pytest.fixture
def second_gateway(mesh: Mesh, tmp_path: Path) -> Iterator[str]:
    """Another gateway replica beside the mesh's own, asking the same scheduler for slots."""
    address = f"127.0.0.1:{free_port()}"
    tls = mesh.identity("gateway")
    args = ["-m", "gateway", "--config", mesh.env["MESHSERVE_CONFIG"], "--listen", address,
            "--scheduler", f"127.0.0.1:{mesh.port('scheduler')}", "--tls-cert", str(tls.cert),
            "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)]  # fmt: skip
    replica = ServiceProcess("gateway-2", args, tmp_path / "gateway-2.log")
    try:
        with grpc.secure_channel(address, channel_credentials(mesh.identity("edge"))) as channel:
            wait_until_serving(channel, replica)
        yield address
    finally:
        replica.terminate()


def test_limits_hold_across_gateway_replicas(mesh: Mesh, second_gateway: str) -> None:
    limits = CallerLimits(requests_per_minute=3)
    identity = Identity("key:kreplicas0001", frozenset({Scope.INFERENCE}), limits, Surface.GRPC, "/x")
    metadata = ((IDENTITY_HEADER, encode_identity(identity)),)
    replicas = [f"127.0.0.1:{mesh.port('gateway')}", second_gateway]

    def generate(address: str) -> None:
        with grpc.secure_channel(address, channel_credentials(mesh.identity("edge"))) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            list(stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=60, metadata=metadata))

    for address in (replicas[0], replicas[1], replicas[0]):
        generate(address)
    for address in replicas:
        with pytest.raises(grpc.RpcError) as refused:
            generate(address)
        assert details_of(refused.value).reason == "RATE_LIMITED", address
