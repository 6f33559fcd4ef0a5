"""Headers and bodies over the mesh's limits, through the whole mesh: each surface answers in its own terms
(431 or 413 over HTTP, RESOURCE_EXHAUSTED over gRPC), never INTERNAL or a 5xx, and the mesh goes on serving.
"""

from __future__ import annotations

import grpc
import httpx
import openai
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from services.shared.header_limits import MAX_REQUEST_HEADER_BYTES, MESH_METADATA_LIMIT_BYTES
from services.shared.status_details import details_of
from tests.e2e.conftest import Mesh
from tests.e2e.openai_support import MODEL, raw_post, sdk

# Bigger than the 60 KiB an unconfigured Envoy takes, which it answered with a reset (INTERNAL over gRPC).
SIXTY_FOUR_KB = 64 * 1024
# Well past grpc's own limits too (16 KiB by default), below the edge codec's 256 KiB ceiling.
TWO_HUNDRED_KB = 200 * 1024
OVER_THE_BODY_LIMIT = 9 * 1024 * 1024
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def padding(size: int) -> str:
    return "p" * size


def padding_headers(size: int) -> tuple[tuple[str, str], ...]:
    """size bytes of header values, in headers of at most 32 KiB: HTTP/2 decoders take no single header field
    over 64 KiB, however large the whole list may be."""
    chunk = 32 * 1024
    return tuple(
        (f"x-padding-{index}", padding(min(chunk, size - start))) for index, start in enumerate(range(0, size, chunk))
    )


def edge_generate(mesh: Mesh, metadata: tuple[tuple[str, str], ...] = (), prompt: str = "Once") -> str:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port('edge_http')}") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = pb.GenerateRequest(prompt=prompt, model=MODEL, max_tokens=2)
        replies = stub.Generate(request, metadata=(*mesh.grpc_auth, *metadata), timeout=120)
        return "".join(reply.text for reply in replies)


def assert_still_serving(mesh: Mesh) -> None:
    assert edge_generate(mesh)
    status, _ = mesh.get_json("/v1/models")
    assert status == 200


@pytest.mark.parametrize("size", [SIXTY_FOUR_KB, TWO_HUNDRED_KB])
def test_large_grpc_metadata_is_resource_exhausted(mesh: Mesh, size: int) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        edge_generate(mesh, padding_headers(size))
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
    assert details.reason == "HEADERS_TOO_LARGE"
    assert details.metadata["limit_bytes"] == str(MAX_REQUEST_HEADER_BYTES)
    assert_still_serving(mesh)


def test_metadata_just_under_the_limit_is_served(mesh: Mesh) -> None:
    # The credential and the client's own headers are counted too, so leave them room.
    assert edge_generate(mesh, (("x-padding", padding(MAX_REQUEST_HEADER_BYTES - 2048)),))


@pytest.mark.parametrize("size", [SIXTY_FOUR_KB, TWO_HUNDRED_KB])
def test_large_rest_headers_are_431_with_the_status_as_json(mesh: Mesh, size: int) -> None:
    reply = httpx.post(
        f"{mesh.http}/v1/generate",
        json={"prompt": "Once", "model": MODEL, "max_tokens": 2},
        headers={**mesh.auth, **dict(padding_headers(size))},
        timeout=60,
    )
    assert reply.status_code == 431, reply.text
    body = reply.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert body["details"][0]["reason"] == "HEADERS_TOO_LARGE"
    assert_still_serving(mesh)


def test_large_openai_headers_are_431_in_openais_envelope(mesh: Mesh) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(mesh).chat.completions.create(**CHAT, extra_headers={"x-padding": padding(SIXTY_FOUR_KB)})
    assert refused.value.status_code == 431
    error = refused.value.body
    assert error["code"] == "headers_too_large" and error["type"] == "invalid_request_error", error
    assert_still_serving(mesh)


def test_a_rest_body_over_the_limit_is_413(mesh: Mesh) -> None:
    body = {"prompt": padding(OVER_THE_BODY_LIMIT), "model": MODEL, "max_tokens": 2}
    reply = raw_post(mesh, "/v1/generate", body)
    assert reply.status_code == 413, reply.text[:500]
    assert reply.json()["details"][0]["reason"] == "REQUEST_TOO_LARGE"
    assert_still_serving(mesh)


def test_an_openai_body_over_the_limit_is_413_in_openais_envelope(mesh: Mesh) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": padding(OVER_THE_BODY_LIMIT)}]}
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(mesh).chat.completions.create(**big)
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "request_too_large"
    assert_still_serving(mesh)


def test_a_grpc_message_over_the_limit_is_resource_exhausted(mesh: Mesh) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        edge_generate(mesh, prompt=padding(OVER_THE_BODY_LIMIT))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
    assert_still_serving(mesh)


def test_a_mesh_server_refuses_large_metadata_itself(mesh: Mesh) -> None:
    # Straight to the gateway, past the edge, with the edge's own identity: the gateway's own check answers.
    with mesh.channel("gateway", "edge") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        metadata = (*mesh.grpc_auth, ("x-padding", padding(MESH_METADATA_LIMIT_BYTES + 1024)))
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
    assert details.reason == "HEADERS_TOO_LARGE"
    assert details.metadata["limit_bytes"] == str(MESH_METADATA_LIMIT_BYTES)
    assert_still_serving(mesh)
