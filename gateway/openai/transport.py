"""uvicorn over mTLS that serves only the mesh identities allowed to call the front.

The TLS handshake proves the peer holds a certificate of the mesh CA; which service it is, the SPIFFE ID in
its URI SAN says. uvicorn hands an app no peer certificate, so the check runs where the connection is made,
and a connection from any other identity is closed before it can send a request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from contextlib import contextmanager
from typing import ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.shared.certs import spiffe_id
from services.shared.header_limits import MESH_METADATA_LIMIT_BYTES
from services.shared.tls import TlsFiles, matching_files

log = logging.getLogger("gateway.openai.transport")
# The edge lets in headers up to the mesh's limit and adds its own (identity, tracing); h11's default of
# 16 KiB would drop such a request's connection with no answer at all.
_MAX_REQUEST_HEAD_BYTES = MESH_METADATA_LIMIT_BYTES + 8 * 1024


def peer_spiffe_ids(transport: asyncio.BaseTransport) -> set[str]:
    certificate = transport.get_extra_info("peercert") or {}
    return {value for kind, value in certificate.get("subjectAltName", ()) if kind == "URI"}


def callers_only(allowed_services: Iterable[str]) -> type[H11Protocol]:
    """An HTTP/1.1 protocol class that closes every TLS connection whose peer is not an allowed service."""
    allowed = frozenset(spiffe_id(service) for service in allowed_services)

    class AllowedCallersOnly(H11Protocol):
        allowed_ids: ClassVar[frozenset[str]] = allowed

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if not peer_spiffe_ids(transport) & self.allowed_ids:
                log.warning("closed a connection from %s: not an allowed caller", peer_spiffe_ids(transport) or "?")
                transport.close()

    return AllowedCallersOnly


class EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: the composition root decides when it stops."""

    @contextmanager
    def capture_signals(self):
        yield


async def follow_certificates(config: uvicorn.Config, tls: TlsFiles, interval: float = 1.0) -> None:
    """Loads replaced certificate files into the server's TLS context, which every new connection uses:
    uvicorn reads them only at start, where the mesh's gRPC servers and the edge take rotated ones up."""
    loaded = tls.version()
    while True:
        await asyncio.sleep(interval)
        try:
            version = tls.version()
            if version == loaded or config.ssl is None:
                continue
            if matching_files(tls) is None:
                continue
            config.ssl.load_cert_chain(str(tls.cert), str(tls.key))
            config.ssl.load_verify_locations(str(tls.ca))
        except (OSError, ssl.SSLError) as error:
            log.warning("could not reload certificates: %s", error)
            continue
        loaded = version
        log.info("reloaded certificates from %s", tls.cert)


def uvicorn_config(app, listen: str, tls: TlsFiles | None, allowed_callers: list[str], grace: float) -> uvicorn.Config:
    host, _, port = listen.rpartition(":")
    common = dict(host=host or "127.0.0.1", port=int(port), lifespan="off", log_config=None, access_log=False,
                  timeout_graceful_shutdown=grace, h11_max_incomplete_event_size=_MAX_REQUEST_HEAD_BYTES)  # fmt: skip
    if tls is None:
        return uvicorn.Config(app, http="h11", **common)
    return uvicorn.Config(
        app,
        http=callers_only(allowed_callers),
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        ssl_ca_certs=str(tls.ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        **common,
    )
