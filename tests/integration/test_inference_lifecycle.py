"""One inference process over mTLS, from start to SIGTERM: health, refusals while loading, TLS, reflection."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from meshserve.inference.v1 import inference_pb2 as pb
from meshserve.inference.v1 import inference_pb2_grpc

from services.shared.certs import (
    Issued,
    create_ca,
    ensure_dev_certs,
    issue,
    load_certificate,
    load_private_key,
    write_pem,
)
from services.shared.status_details import details_of
from services.shared.tls import TlsFiles, channel_credentials
from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port, health_status, inference_args

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Startup:
    address: str
    certs: dict[str, TlsFiles]
    process: ServiceProcess
    health_seen: list[int] = field(default_factory=list)
    refusal_while_loading: grpc.RpcError | None = None


# Retry a refused connection within milliseconds, not after grpc's default second or more: the watch must
# be answered while the model still loads, which takes about a second.
_FAST_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 10), ("grpc.max_reconnect_backoff_ms", 50))


def secure_channel(address: str, tls: TlsFiles) -> grpc.Channel:
    return grpc.secure_channel(address, channel_credentials(tls), options=_FAST_RECONNECT)


def wait_for_port(address: str, process: ServiceProcess, timeout: float = 90) -> None:
    """Until the server accepts connections, so the watch's first call finds it listening."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.process.poll() is None:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.005)


def watch_startup(startup: Startup) -> None:
    """Polls health from the first answer to SERVING, trying a request while the model loads."""
    wait_for_port(startup.address, startup.process)
    with secure_channel(startup.address, startup.certs["gateway"]) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if startup.process.process.poll() is not None:
                break
            status = health_status(channel)
            if status is not None and (not startup.health_seen or startup.health_seen[-1] != status):
                startup.health_seen.append(status)
            if status == NOT_SERVING and startup.refusal_while_loading is None:
                try:
                    list(stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=2), timeout=5))
                except grpc.RpcError as error:
                    startup.refusal_while_loading = error
            if status == SERVING:
                return
            time.sleep(0.01)
    raise TimeoutError(startup.process.logs())


@pytest.fixture(scope="module")
def startup(model_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Startup]:
    directory = tmp_path_factory.mktemp("mtls")
    certs = ensure_dev_certs(directory / "certs", ["inference", "gateway", "cli"])
    server = certs["inference"]
    port = free_port()
    args = inference_args(
        model_config, port, "--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-ca", str(server.ca)
    )
    process = track(ServiceProcess("inference-mtls", args, directory / "inference.log"))
    state = Startup(f"127.0.0.1:{port}", certs, process)
    watch_startup(state)
    yield state
    process.terminate()
    untrack(process)


def test_health_turns_serving_only_after_the_model_loads(startup: Startup) -> None:
    assert startup.health_seen == [NOT_SERVING, SERVING]


def test_requests_while_loading_are_unavailable_with_a_retry_delay(startup: Startup) -> None:
    assert startup.refusal_while_loading is not None
    details = details_of(startup.refusal_while_loading)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.reason == "MODEL_LOADING"
    assert details.retry_after_seconds is not None


def test_a_client_with_a_mesh_certificate_is_served(startup: Startup) -> None:
    with secure_channel(startup.address, startup.certs["gateway"]) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = list(stub.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=4), timeout=30))
    assert reply[-1].usage.output_tokens == 4


def test_a_client_without_a_certificate_is_refused_at_the_handshake(startup: Startup) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=startup.certs["gateway"].ca.read_bytes())
    with grpc.secure_channel(startup.address, credentials) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(startup: Startup, tmp_path: Path) -> None:
    foreign_ca = create_ca("another CA")
    write_pem(issue(foreign_ca, "gateway"), tmp_path / "intruder.pem", tmp_path / "intruder-key.pem")
    intruder = TlsFiles(tmp_path / "intruder.pem", tmp_path / "intruder-key.pem", startup.certs["gateway"].ca)
    with secure_channel(startup.address, intruder) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_mesh_certificate_with_another_spiffe_id_is_permission_denied(startup: Startup) -> None:
    with secure_channel(startup.address, startup.certs["cli"]) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=4), timeout=10))
        # Health stays open to every mesh identity, so operators can probe it.
        assert health_status(channel) == SERVING
    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "CALLER_NOT_ALLOWED"
    assert details.metadata == {"caller": "spiffe://meshserve.local/cli"}


def test_certificates_replaced_on_disk_are_used_without_a_restart(startup: Startup, tmp_path: Path) -> None:
    server = startup.certs["inference"]
    before = ssl_peer_serial(startup.address, server.ca)
    ca = Issued(load_certificate(server.ca), load_private_key(server.ca.with_name("ca-key.pem")))
    write_pem(issue(ca, "inference"), server.cert, server.key)
    after = ssl_peer_serial(startup.address, server.ca)
    assert after != before
    with secure_channel(startup.address, startup.certs["gateway"]) as channel:
        reply = list(inference_pb2_grpc.InferenceServiceStub(channel).Generate(
            pb.GenerateRequest(prompt="Hello", max_tokens=2), timeout=30))  # fmt: skip
    assert reply[-1].usage.output_tokens == 2


def ssl_peer_serial(address: str, ca: Path) -> int:
    """The serial number of the certificate the server presents on a new connection."""
    host, port = address.split(":")
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_reflection_lists_the_services(startup: Startup) -> None:
    with secure_channel(startup.address, startup.certs["gateway"]) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "meshserve.inference.v1.InferenceService" in services
    assert "grpc.health.v1.Health" in services


def test_sigterm_stops_gracefully(startup: Startup) -> None:
    # A process that had not stopped by itself within 20 s would be killed, and exit with -9.
    exit_code = startup.process.terminate(timeout=20)
    assert exit_code == 0
    assert '"message": "stopped"' in startup.process.logs()
