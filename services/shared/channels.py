"""Client channels between mesh services: mTLS when credentials are given, tuned to notice failures fast."""

from __future__ import annotations

import grpc

from services.shared.tls import TlsFiles, channel_credentials

_OPTIONS = (
    # A restarted peer is retried within a fraction of a second rather than after grpc's default backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Long token streams cross idle periods; pings keep them alive and reveal a dead peer.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


def open_channel(address: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address, options=_OPTIONS)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=_OPTIONS)
