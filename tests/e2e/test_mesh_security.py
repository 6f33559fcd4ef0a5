"""Every hop inside the mesh is mTLS: no certificate, or a foreign one, fails the handshake.

A certificate from the mesh CA whose SPIFFE ID may not call the service is denied.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import httpx
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc
from meshserve.inference.v1 import inference_pb2, inference_pb2_grpc

from services.shared.certs import create_ca, issue, write_pem
from services.shared.identity import IDENTITY_HEADER, CallerLimits, Identity, Scope, Surface, encode_identity
from services.shared.status_details import details_of
from services.shared.tls import TlsFiles, channel_credentials
from tests.e2e.conftest import Mesh


def gateway_generate(channel: grpc.Channel) -> None:
    list(
        gateway_pb2_grpc.GatewayServiceStub(channel).Generate(pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=10)
    )


def test_a_caller_without_a_certificate_is_refused_at_the_handshake(mesh: Mesh) -> None:
    ca = mesh.identity("cli").ca.read_bytes()
    with grpc.secure_channel(f"127.0.0.1:{mesh.port('gateway')}", grpc.ssl_channel_credentials(ca)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            gateway_generate(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(mesh: Mesh, tmp_path: Path) -> None:
    write_pem(issue(create_ca("impostor CA"), "edge"), tmp_path / "edge.pem", tmp_path / "edge-key.pem")
    impostor = TlsFiles(tmp_path / "edge.pem", tmp_path / "edge-key.pem", mesh.identity("edge").ca)
    with grpc.secure_channel(f"127.0.0.1:{mesh.port('gateway')}", channel_credentials(impostor)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            gateway_generate(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("port", "identity"), [("gateway", "cli"), ("gateway", "inference"), ("inference_base", "cli")]
)
def test_a_mesh_certificate_with_the_wrong_spiffe_id_is_permission_denied(mesh: Mesh, port: str, identity: str) -> None:
    with mesh.channel(port, identity) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            if port == "gateway":
                gateway_generate(channel)
            else:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                list(stub.Generate(inference_pb2.GenerateRequest(prompt="Hi", max_tokens=2), timeout=10))
    details = details_of(refused.value)
    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert details.metadata["caller"] == f"spiffe://meshserve.local/{identity}"


def test_the_edge_identity_is_the_one_the_gateway_serves(mesh: Mesh) -> None:
    identity = Identity("key:k000000000001", frozenset({Scope.INFERENCE}), CallerLimits(), Surface.GRPC, "/x")
    with mesh.channel("gateway", "edge") as channel:
        replies = list(gateway_pb2_grpc.GatewayServiceStub(channel).Generate(
            pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=30,
            metadata=((IDENTITY_HEADER, encode_identity(identity)),)))  # fmt: skip
    assert replies[-1].usage.output_tokens == 2


def test_even_the_edge_certificate_needs_the_identity_the_edge_established(mesh: Mesh) -> None:
    with mesh.channel("gateway", "edge") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            gateway_generate(channel)
    details = details_of(refused.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "NO_EDGE_IDENTITY")


# The OpenAI front speaks HTTP over mTLS; only the edge may call it.


def front_client(mesh: Mesh, identity: TlsFiles | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(mesh.identity("edge").ca))
    if identity is not None:
        context.load_cert_chain(str(identity.cert), str(identity.key))
    return httpx.Client(base_url=f"https://127.0.0.1:{mesh.port('openai')}", verify=context, timeout=10)


def test_the_openai_front_answers_the_edge_certificate(mesh: Mesh) -> None:
    with front_client(mesh, mesh.identity("edge")) as client:
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("caller", ["no certificate", "cli", "gateway", "another CA"])
def test_the_openai_front_closes_every_other_callers_connection(mesh: Mesh, tmp_path: Path, caller: str) -> None:
    if caller == "no certificate":
        identity = None
    elif caller == "another CA":
        write_pem(issue(create_ca("impostor CA"), "edge"), tmp_path / "edge.pem", tmp_path / "edge-key.pem")
        identity = TlsFiles(tmp_path / "edge.pem", tmp_path / "edge-key.pem", mesh.identity("edge").ca)
    else:
        identity = mesh.identity(caller)
    with front_client(mesh, identity) as client:
        # A refused handshake, or a connection closed before any answer: no HTTP status either way.
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
            client.get("/healthz")
