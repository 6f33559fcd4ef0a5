"""A meshserve server never shares its port: a taken port fails at start instead of splitting the callers."""

from __future__ import annotations

import socket

import pytest

from services.shared.grpc_server import bind, create_server
from tests.ports import free_port


async def test_a_port_another_listener_holds_with_so_reuseport_is_refused() -> None:
    port = free_port()
    # Envoy's listeners set SO_REUSEPORT; a server that set it as well would bind beside them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        server = create_server()
        with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{port}"):
            bind(server, f"127.0.0.1:{port}", None)
        await server.stop(None)


async def test_a_free_port_is_bound_and_reported() -> None:
    port = free_port()
    server = create_server()
    assert bind(server, f"127.0.0.1:{port}", None) == port
    await server.start()
    await server.stop(None)
