"""EdgeConfig: everything the Envoy edge bootstrap depends on, as plain data."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from gateway.edge.auth import EdgeAuth
from services.shared.certs import spiffe_id
from services.shared.header_limits import EDGE_HEADER_CEILING_BYTES
from services.shared.tls import TlsFiles

# A (host, port) pair. Hosts are IP literals or DNS names.
HostPort = tuple[str, int]

GATEWAY_CLUSTER = "gateway"
OPENAI_CLUSTER = "openai"
# The edge answers this path itself; the OpenAI front serves its own health on it too.
HEALTH_PATH = "/healthz"
OTEL_COLLECTOR_CLUSTER = "otel_collector"


@dataclass(frozen=True)
class EdgeLimits:
    """What one edge takes from its clients before it refuses or closes (protection.py)."""

    # Envoy's heap: at shrink_heap_at of it memory is given back, at refuse_requests_at new requests get 503.
    max_heap_bytes: int = 1024 * 1024 * 1024
    shrink_heap_at: float = 0.90
    refuse_requests_at: float = 0.95
    # Open client connections, over both listeners; one past it is closed as soon as it is accepted.
    max_connections: int = 10_000
    # The codec's ceiling only: the authorization service refuses headers far below it, and answers in the
    # surface's shape, which the codec cannot (services/shared/header_limits.py).
    max_request_header_bytes: int = EDGE_HEADER_CEILING_BYTES
    max_headers_count: int = 1000
    # A REST or OpenAI request body, the same as the gateway's largest gRPC message.
    max_request_body_bytes: int = 8 * 1024 * 1024
    # A connection with no request for this long is closed.
    idle_timeout: datetime.timedelta = datetime.timedelta(seconds=300)
    # Against slowloris: a request's headers must all arrive within this, or it is answered 408 and closed.
    request_headers_timeout: datetime.timedelta = datetime.timedelta(seconds=10)
    # A TLS handshake not finished within this is cut off.
    tls_handshake_timeout: datetime.timedelta = datetime.timedelta(seconds=10)
    max_concurrent_streams: int = 100
    # What Envoy buffers per connection before it stops reading from it (flow control, not a refusal).
    per_connection_buffer_bytes: int = 32 * 1024

    def __post_init__(self) -> None:
        if not 0 < self.shrink_heap_at < self.refuse_requests_at <= 1:
            raise ValueError("heap thresholds must satisfy 0 < shrink_heap_at < refuse_requests_at <= 1")
        # Envoy's own bounds on its codec's header limit.
        if not 1024 <= self.max_request_header_bytes <= 8192 * 1024 or self.max_request_header_bytes % 1024:
            raise ValueError("max_request_header_bytes must be whole KiB, from 1 KiB to 8 MiB")
        for name in ("max_heap_bytes", "max_connections", "max_headers_count", "max_request_body_bytes",
                     "max_concurrent_streams", "per_connection_buffer_bytes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("idle_timeout", "request_headers_timeout", "tls_handshake_timeout"):
            if getattr(self, name) <= datetime.timedelta(0):
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class EdgeConfig:
    """How the edge listens, where the gateway replicas are, and which identities it uses.

    server_tls is the certificate clients see on the TLS listener (its CA is not used: clients need no
    certificate at the edge). upstream_tls is the edge's own mesh identity for mTLS to the gateway,
    with the mesh CA that the gateway's certificate must chain to.
    """

    gateway_endpoints: list[HostPort]
    server_tls: TlsFiles
    upstream_tls: TlsFiles
    descriptor_set: Path
    # Where write_bootstrap puts the secret files that Envoy loads (and watches) through SDS.
    sds_dir: Path
    plain_http_address: HostPort = ("127.0.0.1", 8080)
    tls_address: HostPort = ("0.0.0.0", 8443)
    admin_address: HostPort = ("127.0.0.1", 9901)
    # The gateway must present this URI SAN; the SNI is what its certificate also names.
    gateway_san: str = spiffe_id("gateway")
    gateway_sni: str = "localhost"
    # The OpenAI front replicas (gateway/openai); none leaves the OpenAI API's paths answered 404.
    openai_endpoints: list[HostPort] = field(default_factory=list)
    openai_san: str = spiffe_id("openai")
    # The authorization service replicas (gateway/auth). None leaves every route open: only tests of
    # the edge alone do that; the launcher and the edge writer always name them.
    auth_endpoints: list[HostPort] = field(default_factory=list)
    auth_san: str = spiffe_id("auth")
    auth: EdgeAuth = field(default_factory=EdgeAuth)
    # The CAs an https JWKS URL's certificate is checked against.
    system_ca_bundle: Path = Path("/etc/ssl/certs/ca-certificates.crt")
    # One token bucket for the whole edge (per Envoy worker); an empty bucket answers 429.
    rate_limit_per_second: int = 100
    rate_limit_burst: int = 200
    # Token streams are long and bursty: no overall request timeout, only an idle limit and a ceiling.
    stream_idle_timeout: datetime.timedelta = datetime.timedelta(seconds=300)
    max_stream_duration: datetime.timedelta = datetime.timedelta(hours=1)
    connect_timeout: datetime.timedelta = datetime.timedelta(seconds=2)
    health_check_interval: datetime.timedelta = datetime.timedelta(seconds=1)
    outlier_consecutive_failures: int = 3
    outlier_base_ejection_time: datetime.timedelta = datetime.timedelta(seconds=5)
    # The OTLP/gRPC collector (Jaeger, an OpenTelemetry Collector) that Envoy sends its spans to.
    # None: no tracing at all, and nothing about it in the bootstrap.
    otlp_endpoint: HostPort | None = None
    # Envoy batches spans per worker and sends a batch when it holds trace_min_flush_spans spans, or
    # at every trace_flush_interval, whichever comes first (Envoy's defaults: 5 spans, 5 seconds).
    trace_flush_interval: datetime.timedelta = datetime.timedelta(seconds=1)
    trace_min_flush_spans: int = 5
    limits: EdgeLimits = field(default_factory=EdgeLimits)

    def __post_init__(self) -> None:
        # Plain HTTP and the admin interface carry no authentication, so they never leave the machine.
        _check_listen_address("plain_http_address", self.plain_http_address, loopback_only=True)
        _check_listen_address("admin_address", self.admin_address, loopback_only=True)
        _check_listen_address("tls_address", self.tls_address, loopback_only=False)
        if not self.gateway_endpoints:
            raise ValueError("the edge needs at least one gateway endpoint")
        for host, port in [*self.gateway_endpoints, *self.openai_endpoints, *self.auth_endpoints]:
            _check_port(host, port)
        if self.auth.issuers and not self.auth_endpoints:
            raise ValueError("trusted JWT issuers need the authorization service, which decides on their tokens")
        if self.rate_limit_per_second < 1 or self.rate_limit_burst < 1:
            raise ValueError("the rate limit needs at least one request per second and a burst of one")
        if self.otlp_endpoint is not None:
            _check_port(*self.otlp_endpoint)
        if self.trace_flush_interval < datetime.timedelta(milliseconds=1) or self.trace_min_flush_spans < 1:
            raise ValueError("spans need a flush interval of at least 1ms and a batch of at least one span")


def _check_listen_address(name: str, address: HostPort, *, loopback_only: bool) -> None:
    host, port = address
    ip = _ip(host)
    # Envoy binds listeners to IP literals only.
    if ip is None:
        raise ValueError(f"{name} must be an IP address, not {host!r}")
    if loopback_only and not ip.is_loopback:
        raise ValueError(f"{name} must be a loopback address, not {host!r}")
    _check_port(host, port)


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"port {port} of {host!r} is out of range")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
