"""What the credential check adds to every request: the authorization service's ext_authz Check, timed as
Envoy makes it (mTLS gRPC, as the edge), against a health check on the same connection as the baseline.

Envoy waits for exactly this call before it sends a request on, so its time is what the check adds to time
to first token; jwt_authn's signature check runs inside Envoy and is not part of a key's path. The full
time to first token through the edge is measured beside it, with the key, for scale.
"""

from __future__ import annotations

import statistics
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import Mesh
from bench.workload import distribution
from gateway.auth.wire import ext_authz_pb2 as wire
from gateway.auth.wire import ext_authz_pb2_grpc
from services.shared.certs import dev_identity
from services.shared.tls import channel_credentials

CHECKS = 400


def _check_request(api_key: str) -> wire.CheckRequest:
    request = wire.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.protocol = "POST", "/v1/chat/completions", "HTTP/1.1"
    # The headers an OpenAI SDK request arrives with.
    http.headers.update(
        {"authorization": f"Bearer {api_key}", "content-type": "application/json", "user-agent": "OpenAI/Python",
         "x-request-id": "bench", "accept": "application/json"}
    )  # fmt: skip
    return request


def credential_check(mesh: Mesh, checks: int = CHECKS) -> dict:
    certs = mesh.state_dir / "certs"
    address = f"127.0.0.1:{mesh.ports['auth']}"
    with grpc.secure_channel(address, channel_credentials(dev_identity(certs, "edge"))) as channel:
        authorization = ext_authz_pb2_grpc.AuthorizationStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = _check_request(mesh.api_key)
        answer = authorization.Check(request, timeout=5)
        if not answer.HasField("ok_response"):
            raise RuntimeError(f"the development key was refused: {answer.denied_response.body}")
        check_seconds, baseline_seconds = [], []
        # Interleaved, so that whatever else the machine does falls on both alike.
        for _ in range(checks):
            started = time.perf_counter()
            authorization.Check(request, timeout=5)
            check_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            baseline_seconds.append(time.perf_counter() - started)
    added = statistics.median(check_seconds)
    return {
        "check_seconds": distribution(check_seconds),
        "health_round_trip_seconds": distribution(baseline_seconds),
        "added_p50_seconds": added,
        "check_to_health_ratio": added / statistics.median(baseline_seconds),
    }
