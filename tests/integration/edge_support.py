"""The real Envoy edge, from its generated bootstrap, in front of a real mTLS gRPC gateway stand-in.

The stand-in GatewayService runs in the test's process on its event loop, so every blocking call (HTTP
clients, envoy --mode validate) runs in a thread: a blocked loop would fail Envoy's one-second health checks.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from gateway.edge import EdgeConfig, build_descriptor_set, write_bootstrap
from services.shared.certs import ensure_dev_certs
from services.shared.errors import invalid_argument
from services.shared.status_details import to_grpc_status
from services.shared.tls import TlsFiles, server_credentials
from tests.conftest import track, untrack
from tests.support import ServiceProcess, free_port

ENVOY = Path(sys.executable).with_name("envoy")
GATEWAY_SERVICE = "meshserve.gateway.v1.GatewayService"
TOKENS = ["Once", " upon", " a time"]


class StandInGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Just enough of the public API to see each kind of answer through the edge."""

    def __init__(self) -> None:
        self.requests: list[pb.GenerateRequest] = []
        # The metadata each Generate call arrived with, in the order of requests.
        self.metadata: list[dict[str, str]] = []
        # By prompt: the rest of the stream waits for the event, once the first token has gone.
        self.holds: dict[str, asyncio.Event] = {}
        # Streams waiting on a hold now, and the most that ever waited at once.
        self.held_now = 0
        self.most_held = 0

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        self.requests.append(request)
        self.metadata.append({key: value for key, value in context.invocation_metadata() or ()})
        if not request.prompt:
            error = invalid_argument("EMPTY_PROMPT", "the prompt is empty", field="prompt")
            await context.abort_with_status(to_grpc_status(error))
        for index, text in enumerate(TOKENS):
            if index == 1 and request.prompt in self.holds:
                await self._hold(self.holds[request.prompt])
            yield pb.GenerateResponse(text=text, model=request.model or "gemma-3-270m", token_count=1)
        yield pb.GenerateResponse(
            model=request.model or "gemma-3-270m",
            finish_reason=pb.FINISH_REASON_LENGTH,
            usage=pb.Usage(input_tokens=2, output_tokens=len(TOKENS)),
        )

    async def _hold(self, release: asyncio.Event) -> None:
        self.held_now += 1
        self.most_held = max(self.most_held, self.held_now)
        try:
            await asyncio.wait_for(release.wait(), timeout=30)
        finally:
            self.held_now -= 1

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext):
        model = pb.Model(name="gemma-3-270m", engine="llama_cpp", state=pb.MODEL_STATE_READY, context_length=2048)
        return pb.ListModelsResponse(models=[model])


@dataclass
class Gateway:
    port: int
    health: health.aio.HealthServicer
    servicer: StandInGateway


@dataclass
class Edge:
    config: EdgeConfig
    process: ServiceProcess

    @property
    def http_port(self) -> int:
        return self.config.plain_http_address[1]

    @property
    def tls_port(self) -> int:
        return self.config.tls_address[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return ensure_dev_certs(tmp_path_factory.mktemp("certs"), ["edge", "gateway"])


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_descriptor_set(tmp_path_factory.mktemp("descriptors") / "gateway.pb")


@pytest.fixture(scope="module")
async def gateway(certs: dict[str, TlsFiles]) -> AsyncIterator[Gateway]:
    # Like the real gateway: mTLS that requires a client certificate from the mesh CA.
    server, servicer = grpc.aio.server(), StandInGateway()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((GATEWAY_SERVICE, reflection.SERVICE_NAME), server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs["gateway"]))
    await server.start()
    yield Gateway(port, health_servicer, servicer)
    await server.stop(None)


def edge_config(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, directory: Path, **overrides: Any
) -> EdgeConfig:
    # Free ports everywhere, so a running mesh (8080, 8443, 9901) and other tests never collide.
    return EdgeConfig(
        gateway_endpoints=[("127.0.0.1", gateway.port)],
        server_tls=certs["edge"],
        upstream_tls=certs["edge"],
        descriptor_set=descriptor_set,
        sds_dir=directory / "sds",
        plain_http_address=("127.0.0.1", free_port()),
        tls_address=("127.0.0.1", free_port()),
        admin_address=("127.0.0.1", free_port()),
        **overrides,
    )


async def start_edge(config: EdgeConfig, directory: Path, healthy: bool = True) -> Edge:
    """Envoy on this config, once /healthz is 200; or, with healthy=False, once it is live (its admin /ready)."""
    bootstrap = write_bootstrap(config, directory / "envoy.json")
    args = [
        str(ENVOY), "-c", str(bootstrap), "--concurrency", "2",
        # A random base id and no hot restart: parallel Envoys share no shared memory.
        "--base-id", str(random.randrange(1_000, 1_000_000)), "--disable-hot-restart",
    ]  # fmt: skip
    edge = Edge(config, track(ServiceProcess("envoy", args, directory / "envoy.log")))
    await (wait_until_healthy(edge) if healthy else wait_until_live(edge))
    return edge


async def stop_edge(edge: Edge) -> None:
    await asyncio.to_thread(edge.process.terminate)
    untrack(edge.process)


async def wait_until_healthy(edge: Edge, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if edge.process.process.poll() is not None:
            raise RuntimeError(f"envoy exited with {edge.process.process.returncode}:\n{edge.process.logs()}")
        if await healthz(edge) == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"/healthz was not 200 after {timeout}s:\n{edge.process.logs()}")


async def wait_until_live(edge: Edge, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if edge.process.process.poll() is not None:
            raise RuntimeError(f"envoy exited with {edge.process.process.returncode}:\n{edge.process.logs()}")
        if await asyncio.to_thread(_admin_status, edge, "/ready") == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"envoy was not live after {timeout}s:\n{edge.process.logs()}")


def _admin_status(edge: Edge, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{edge.config.admin_address[1]}{path}", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


async def admin_stats(edge: Edge, prefix: str) -> dict[str, int]:
    """Envoy's counters and gauges whose names start with prefix, from its admin interface."""

    def read() -> dict[str, int]:
        url = f"http://127.0.0.1:{edge.config.admin_address[1]}/stats?filter=^{re.escape(prefix)}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            lines = answer.read().decode().splitlines()
        stats = {}
        for line in lines:
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                stats[name] = int(value)
        return stats

    return await asyncio.to_thread(read)


async def healthz(edge: Edge) -> int | None:
    try:
        return (await request(edge, "http", "GET", "/healthz")).status
    except OSError:
        return None


def client_tls(edge: Edge) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(edge.config.server_tls.ca))


def _request(
    edge: Edge, scheme: str, method: str, path: str, body: dict | None, on_first_event: Callable[[], None] | None
) -> Response:
    if scheme == "https":
        connection = http.client.HTTPSConnection("127.0.0.1", edge.tls_port, timeout=10, context=client_tls(edge))
    else:
        connection = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"content-type": "application/json"})
        response = connection.getresponse()
        lines = []
        while line := response.readline():
            lines.append(line)
            if on_first_event is not None and line.startswith(b"data: "):
                on_first_event()
                on_first_event = None
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, b"".join(lines))
    finally:
        connection.close()


async def request(
    edge: Edge,
    scheme: str,
    method: str,
    path: str,
    body: dict | None = None,
    on_first_event: Callable[[], None] | None = None,
) -> Response:
    """The whole response; `on_first_event` is called from the reading thread once the first event is in."""
    return await asyncio.to_thread(_request, edge, scheme, method, path, body, on_first_event)


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON of each `data:` event; every event must be exactly one data line."""
    events = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            assert block.startswith("data: ") and "\n" not in block.strip(), block
            events.append(json.loads(block.removeprefix("data: ")))
    return events
