"""The edge's protection on the real Envoy binary: slow and idle clients, the connection and stream caps, an
overloaded heap, and bodies and headers over the limits.

Each test starts its own edge with limits small enough to reach, in front of the stand-in gateway.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import selectors
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from meshserve.gateway.v1 import gateway_pb2 as pb
from meshserve.gateway.v1 import gateway_pb2_grpc

from gateway.edge.config import EdgeLimits
from services.shared.tls import TlsFiles
from tests.integration.edge_support import (
    TOKENS,
    Edge,
    Gateway,
    admin_stats,
    edge_config,
    healthz,
    request,
    start_edge,
    stop_edge,
)

SECONDS = datetime.timedelta(seconds=1)


@asynccontextmanager
async def edge_with(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, directory: Path, healthy: bool = True,
    **limits: Any,
) -> AsyncIterator[Edge]:  # fmt: skip
    """An edge with these limits for the length of the block."""
    config = edge_config(certs, descriptor_set, gateway, directory, limits=EdgeLimits(**limits))
    edge = await start_edge(config, directory, healthy=healthy)
    try:
        yield edge
    finally:
        await stop_edge(edge)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the edge sends until it closes the connection; TimeoutError if it is still open after timeout."""
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def slowloris(port: int, byte_every: float, give_up_after: float) -> tuple[bytes, float]:
    """Starts a request and sends its headers a byte at a time; what the edge answered, and after how long."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: edge\r\nx-slow: ")
        started = time.monotonic()
        sock.setblocking(False)
        received = b""
        while time.monotonic() - started < give_up_after:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                try:
                    sock.send(b"a")
                except OSError:
                    break
                time.sleep(byte_every)
                continue
            except OSError:
                break
            if not chunk:
                return received, time.monotonic() - started
            received += chunk
        return received, time.monotonic() - started


def status_and_body(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip().startswith(b"{") else body


def reason_of(body: dict[str, Any]) -> str:
    return body["details"][0]["reason"]


async def test_a_slowloris_client_is_answered_408_when_its_headers_take_too_long(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    async with edge_with(certs, descriptor_set, gateway, tmp_path, request_headers_timeout=1 * SECONDS) as edge:
        # A byte every 0.2 s keeps every idle timer from firing; only the headers timeout can end it.
        answer, _ = await asyncio.to_thread(slowloris, edge.http_port, byte_every=0.2, give_up_after=30)
        status, body = status_and_body(answer)
        assert status == 408, answer
        assert reason_of(body) == "REQUEST_HEADERS_TIMEOUT"
        stats = await admin_stats(edge, "http.edge_http.downstream_rq_header_timeout")
        assert stats["http.edge_http.downstream_rq_header_timeout"] == 1
        assert await healthz(edge) == 200


async def test_a_tls_handshake_that_is_never_finished_is_cut_off(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    async with edge_with(certs, descriptor_set, gateway, tmp_path, tls_handshake_timeout=1 * SECONDS) as edge:

        def connect_and_say_nothing() -> bytes:
            with socket.create_connection(("127.0.0.1", edge.tls_port), timeout=5) as sock:
                return read_until_closed(sock, timeout=30)

        assert await asyncio.to_thread(connect_and_say_nothing) == b""
        listener = f"listener.127.0.0.1_{edge.tls_port}."
        stats = await admin_stats(edge, listener)
        assert stats[f"{listener}downstream_cx_transport_socket_connect_timeout"] == 1
        # And a client that does finish its handshake is served as ever.
        assert (await request(edge, "https", "GET", "/healthz")).status == 200


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def wait_until_all_closed(connections: list[socket.socket], timeout: float) -> int:
    """Waits until the edge has closed every connection; how many were still open when the time ran out."""
    selector = selectors.DefaultSelector()
    for connection in connections:
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)
    open_ones, deadline = len(connections), time.monotonic() + timeout
    while open_ones and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            try:
                if key.fileobj.recv(4096):
                    continue
            except OSError:
                pass
            selector.unregister(key.fileobj)
            open_ones -= 1
    selector.close()
    return open_ones


async def test_idle_connections_over_the_cap_are_closed_at_once_and_the_rest_when_idle(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    limits = {"max_connections": 1500, "idle_timeout": 10 * SECONDS}
    connections: list[socket.socket] = []
    async with edge_with(certs, descriptor_set, gateway, tmp_path, **limits) as edge:
        try:
            connections = await asyncio.to_thread(open_idle_connections, edge.http_port, 2000)
            assert await asyncio.to_thread(wait_until_all_closed, connections, 60) == 0
        finally:
            for connection in connections:
                connection.close()
        listener = f"listener.127.0.0.1_{edge.http_port}."
        stats = {**await admin_stats(edge, listener), **await admin_stats(edge, "http.edge_http.")}
        # Every connection is accounted for: 500 refused by the cap as they were accepted, 1,500 let in and
        # closed by the idle timeout; none was left open.
        assert stats[f"{listener}downstream_global_cx_overflow"] == 500
        assert stats["http.edge_http.downstream_cx_idle_timeout"] == 1500
        assert stats[f"{listener}downstream_cx_active"] == 0
        assert await healthz(edge) == 200


async def test_streams_past_the_per_connection_cap_wait_and_none_fails(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    prompt = f"capped streams {time.monotonic_ns()}"
    release = gateway.servicer.holds[prompt] = asyncio.Event()
    gateway.servicer.most_held = 0
    try:
        async with (
            edge_with(certs, descriptor_set, gateway, tmp_path, max_concurrent_streams=4) as edge,
            # One channel is one HTTP/2 connection: the edge lets 4 of its streams run at once.
            grpc.aio.insecure_channel(f"127.0.0.1:{edge.http_port}") as channel,
        ):
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)

            async def generate() -> str:
                texts = [reply.text async for reply in stub.Generate(pb.GenerateRequest(prompt=prompt), timeout=60)]
                return "".join(texts)

            calls = [asyncio.create_task(generate()) for _ in range(12)]
            deadline = time.monotonic() + 30
            while gateway.servicer.held_now < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert gateway.servicer.held_now == 4
            release.set()
            texts = await asyncio.gather(*calls)
        assert texts == ["".join(TOKENS)] * 12
        assert gateway.servicer.most_held == 4
    finally:
        release.set()
        gateway.servicer.holds.pop(prompt, None)


async def test_an_edge_over_its_heap_limit_answers_503_edge_overloaded_on_every_surface(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    # Far below what Envoy itself takes, so the overload manager acts as soon as it first reads the heap.
    async with edge_with(certs, descriptor_set, gateway, tmp_path, healthy=False, max_heap_bytes=1024 * 1024) as edge:
        action = "overload.envoy.overload_actions.stop_accepting_requests.active"
        deadline = time.monotonic() + 30
        while (await admin_stats(edge, action)).get(action) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        native = await request(edge, "http", "POST", "/v1/generate", {"prompt": "Once"})
        assert native.status == 503, native.body
        assert reason_of(native.json()) == "EDGE_OVERLOADED", native.json()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.http_port}") as channel:
            call = gateway_pb2_grpc.GatewayServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert all(r.prompt != "Once" for r in gateway.servicer.requests)


def send_raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        return read_until_closed(sock, timeout=30)


async def test_headers_past_the_codec_ceiling_are_431_over_http1(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    # A low ceiling, so the whole request is in Envoy's first read: with bytes left unread, its close would
    # be a reset, and the client's kernel would drop the 431 before the client read it.
    async with edge_with(certs, descriptor_set, gateway, tmp_path, max_request_header_bytes=16 * 1024) as edge:
        big = b"x-big: " + b"a" * (20 * 1024) + b"\r\n"
        head = b"GET /v1/models HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n" + big + b"\r\n"
        status, body = status_and_body(await asyncio.to_thread(send_raw, edge.http_port, head))
        assert status == 431
        assert reason_of(body) == "HEADERS_TOO_LARGE"
        assert await healthz(edge) == 200


async def test_a_body_over_the_limit_is_413_and_grpc_streams_are_not_buffered(
    certs: dict[str, TlsFiles], descriptor_set: Path, gateway: Gateway, tmp_path: Path
) -> None:
    async with edge_with(certs, descriptor_set, gateway, tmp_path, max_request_body_bytes=1024) as edge:
        oversized = await request(edge, "http", "POST", "/v1/generate", {"prompt": "a" * 4096})
        assert oversized.status == 413, oversized.body
        assert reason_of(oversized.json()) == "REQUEST_TOO_LARGE"
        fits = await request(edge, "http", "POST", "/v1/generate", {"prompt": "a" * 512})
        assert fits.status == 200, fits.body
        # A gRPC message far over the REST limit goes through: the gateway bounds its messages itself.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.http_port}") as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            replies = [reply async for reply in stub.Generate(pb.GenerateRequest(prompt="b" * 65536), timeout=30)]
        assert "".join(reply.text for reply in replies) == "".join(TOKENS)
