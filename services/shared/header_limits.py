"""How large a request's headers (its gRPC metadata) may be, at each layer a request crosses.

A limit only helps if whatever enforces it can answer in the caller's terms. Envoy's HTTP codec can only
reset an HTTP/2 stream (a gRPC caller reads INTERNAL), so the edge's codec takes headers up to a generous
ceiling and the authorization service, which every request but /healthz passes, refuses anything over
MAX_REQUEST_HEADER_BYTES with 431 or RESOURCE_EXHAUSTED in the surface's shape. Mesh servers refuse
metadata over MESH_METADATA_LIMIT_BYTES themselves (room for the identity and trace headers the edge
adds), and their gRPC transport takes up to GRPC_METADATA_CEILING_BYTES, for the same reason as the edge's
codec: so that it is the refusal, not the transport, that answers.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.shared.errors import headers_too_large

MAX_REQUEST_HEADER_BYTES = 32 * 1024
MESH_METADATA_LIMIT_BYTES = 40 * 1024
EDGE_HEADER_CEILING_BYTES = 256 * 1024
GRPC_METADATA_CEILING_BYTES = EDGE_HEADER_CEILING_BYTES + 32 * 1024


def header_bytes(headers: Iterable[tuple[str, str | bytes]]) -> int:
    """Names and values, as HTTP/2 counts a header list before compression (less its 32-byte overheads)."""
    return sum(len(name) + len(value) for name, value in headers)


def check_header_size(headers: Iterable[tuple[str, str | bytes]], limit_bytes: int) -> None:
    """Raises HEADERS_TOO_LARGE (431, RESOURCE_EXHAUSTED) when the headers come to more than limit_bytes."""
    size = header_bytes(headers)
    if size > limit_bytes:
        raise headers_too_large(size, limit_bytes)
