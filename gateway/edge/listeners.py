"""The two edge listeners: plain HTTP on loopback and TLS for everyone, with one route table (routes.py)."""

from __future__ import annotations

import datetime

from envoy_data_plane.envoy.config.core.v3 import TransportSocket
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import CommonTlsContext, DownstreamTlsContext

from gateway.edge.config import EdgeConfig
from gateway.edge.filters import http_filters
from gateway.edge.local_replies import local_reply_config
from gateway.edge.protection import http2_protocol_options, http_protocol_options
from gateway.edge.routes import route_configuration
from gateway.edge.secrets import EDGE_SERVER_SECRET, sds_secret_config
from gateway.edge.tracing import http_tracing
from gateway.edge.typed import pack, socket_address

PLAIN_LISTENER = "edge_http"
TLS_LISTENER = "edge_https"
_DISABLED = datetime.timedelta(0)


def listeners(config: EdgeConfig) -> list[Listener]:
    buffer_limit = config.limits.per_connection_buffer_bytes
    plain = Listener(
        name=PLAIN_LISTENER,
        address=socket_address(config.plain_http_address),
        filter_chains=[FilterChain(filters=[_http_connection_manager(config, PLAIN_LISTENER)])],
        per_connection_buffer_limit_bytes=buffer_limit,
    )
    tls = Listener(
        name=TLS_LISTENER,
        address=socket_address(config.tls_address),
        filter_chains=[
            FilterChain(
                filters=[_http_connection_manager(config, TLS_LISTENER)],
                transport_socket=_downstream_tls(config),
                # A client that opens a connection and never finishes its handshake holds a slot of the cap.
                transport_socket_connect_timeout=config.limits.tls_handshake_timeout,
            )
        ],
        per_connection_buffer_limit_bytes=buffer_limit,
    )
    return [plain, tls]


def _downstream_tls(config: EdgeConfig) -> TransportSocket:
    context = DownstreamTlsContext(
        common_tls_context=CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds_secret_config(config, EDGE_SERVER_SECRET)],
            # h2 for gRPC clients, http/1.1 for REST clients such as curl without --http2.
            alpn_protocols=["h2", "http/1.1"],
        ),
        # Clients authenticate to the gateway with their API credentials, not certificates.
        require_client_certificate=False,
    )
    return TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def _http_connection_manager(config: EdgeConfig, stat_prefix: str) -> Filter:
    manager = HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=route_configuration(config),
        http_filters=http_filters(config),
        local_reply_config=local_reply_config(),
        # The edge faces clients directly, so the peer address is the client's address.
        use_remote_address=True,
        # A stream that says nothing for this long is dead; a slow but live token stream is not.
        stream_idle_timeout=config.stream_idle_timeout,
        request_timeout=_DISABLED,
        request_headers_timeout=config.limits.request_headers_timeout,
        max_request_headers_kb=config.limits.max_request_header_bytes // 1024,
        common_http_protocol_options=http_protocol_options(config.limits),
        http2_protocol_options=http2_protocol_options(config.limits),
        # None (no collector) leaves tracing out of the bootstrap altogether.
        tracing=http_tracing(config),
    )
    return Filter(name="envoy.filters.network.http_connection_manager", typed_config=pack(manager))
