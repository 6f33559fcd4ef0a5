"""Client channels between mesh services: mTLS when credentials are given, tuned to notice failures fast."""

from __future__ import annotations

import grpc

from services.shared.certs import role_name
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


def open_channel(address: str, tls: TlsFiles | None, peer: str = "") -> grpc.aio.Channel:
    """A channel to HOST:PORT, or round-robin over replicas named as a comma-separated list of IP:PORT.

    `peer` is the mesh role expected there ("inference", "scheduler"): its certificate is checked for the
    role's name rather than for the host dialled, as a SPIFFE peer is checked by identity, not address;
    endpoints that register from other nodes and monitors found by DNS are dialled by IP, which no
    certificate a role shares across its replicas can name. Without `peer`, the host is checked.
    """
    target, options = balanced_target(address)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=_OPTIONS + options)
    if peer:
        options += (("grpc.ssl_target_name_override", role_name(peer)),)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=_OPTIONS + options)


def balanced_target(address: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """grpc's target and options for `address`: one channel that spreads its calls over every replica,
    skipping one that is down, as grpc's own round_robin policy does."""
    replicas = [part.strip() for part in address.split(",") if part.strip()]
    if len(replicas) <= 1:
        return address, ()
    host = replicas[0].rpartition(":")[0]
    # The ipv4 scheme takes a list of addresses; the certificate is checked against the first's host, as
    # every replica's certificate names the same hosts.
    return "ipv4:" + ",".join(replicas), (("grpc.lb_policy_name", "round_robin"), ("grpc.default_authority", host))
