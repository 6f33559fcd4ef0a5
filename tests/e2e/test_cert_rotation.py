"""Every certificate of the mesh rotated while traffic runs on every surface: no request fails, and every
server (each mesh service, the OpenAI front, the edge) presents its new certificate to new connections."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509

from bench.soak_clients import GrpcClient, JobsClient, OpenAIClient, Outcome, RestClient, Target
from orchestrator.mesh_plan import IDENTITIES
from services.shared.certs import load_certificate, rotate_certs
from tests.e2e.conftest import Mesh
from tests.e2e.test_mesh_scheduling import wait_for

# The servers whose certificates a new connection sees, and the port each listens on.
SERVERS = {"gateway": "gateway", "scheduler": "scheduler", "gpu-monitor": "gpu_monitor", "auth": "auth",
           "openai": "openai", "inference": "inference_base", "edge": "edge_https"}  # fmt: skip
REQUESTS_EACH_SIDE = 8


def presented_serial(port: int, certs: Path) -> int:
    """The serial of the certificate the server on port presents to a new connection."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.check_hostname = False
    # Mesh servers ask every caller for a certificate; the command-line identity is one they all take.
    context.load_cert_chain(str(certs / "cli.pem"), str(certs / "cli-key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


class Traffic:
    """Two workers sending one request after another, through every surface in turn, until stopped."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._jobs = JobsClient(target)
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(2)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=300)
        self.outcomes.extend(self._jobs.settle(within=120))
        self._jobs.close()

    def _work(self) -> None:
        # Fresh clients, so their connections are opened during this test, not reused from elsewhere.
        clients = [GrpcClient(self._target), RestClient(self._target), OpenAIClient(self._target), self._jobs]
        index = 0
        while not self._stop.is_set():
            outcome = clients[index % len(clients)].send("NORMAL", 4)
            if outcome is not None:
                self.outcomes.append(outcome)
            index += 1
        for client in clients[:3]:
            client.close()

    def served_so_far(self) -> int:
        return len(self.outcomes)


def test_rotating_every_certificate_under_load_fails_no_request(mesh: Mesh) -> None:
    certs = mesh.state_dir / "certs"
    target = Target(mesh.port("edge_http"), mesh.port("edge_https"), certs / "ca.pem", mesh.api_key, mesh.state_dir)
    before = {name: presented_serial(mesh.port(port), certs) for name, port in SERVERS.items()}
    with Traffic(target) as traffic:
        wait_for(lambda: traffic.served_so_far() >= REQUESTS_EACH_SIDE, 300, "requests before the rotation")
        rotate_certs(certs, list(IDENTITIES))
        rotated_at = traffic.served_so_far()
        new = {name: load_certificate(certs / f"{name}.pem").serial_number
               for name in SERVERS}  # fmt: skip
        presenting_new = lambda: all(  # noqa: E731
            presented_serial(mesh.port(port), certs) == new[name] for name, port in SERVERS.items()
        )
        # Each poll is a TLS handshake with every server: a tenth of a second apart.
        wait_for(presenting_new, 30, "every server presenting its new certificate", every=0.1)
        wait_for(lambda: traffic.served_so_far() >= rotated_at + REQUESTS_EACH_SIDE, 300, "requests after it")
    failed = [outcome for outcome in traffic.outcomes if outcome.kind != "served"]
    assert failed == [], failed
    assert {outcome.surface for outcome in traffic.outcomes} == {"grpc", "rest", "openai", "jobs"}
    assert all(before[name] != new[name] for name in SERVERS)
    # And calls that open new connections everywhere, after the rotation, are served too.
    assert mesh.post_generate({"prompt": "Hello", "max_tokens": 2}).events[-1]["usage"]["output_tokens"] == 2
