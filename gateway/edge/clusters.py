"""The edge's clusters.

- gateway: mTLS over HTTP/2 to every gateway replica, with health checks and ejection.
- openai (when configured): mTLS over HTTP/1.1 to every OpenAI front replica, the same way.
- auth (when configured): mTLS over HTTP/2 to the authorization service, which ext_authz asks.
- jwks_<issuer> (one per issuer whose JWKS is a URL): where jwt_authn fetches the keys, over verified TLS.
- otel_collector (only with tracing on): plaintext HTTP/2 to the OTLP/gRPC collector.
"""

from __future__ import annotations

import datetime
import ipaddress
from urllib.parse import urlsplit

from envoy_data_plane.envoy.config.cluster.v3 import (
    Cluster,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    HealthCheckHttpHealthCheck,
    Http2ProtocolOptions,
    KeepaliveSettings,
    TransportSocket,
)
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    CommonTlsContextCombinedCertificateValidationContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher

from gateway.edge.auth import AUTH_CLUSTER, TrustedIssuer
from gateway.edge.config import (
    GATEWAY_CLUSTER,
    HEALTH_PATH,
    OPENAI_CLUSTER,
    OTEL_COLLECTOR_CLUSTER,
    EdgeConfig,
    HostPort,
)
from gateway.edge.secrets import EDGE_CLIENT_SECRET, MESH_CA_SECRET, sds_secret_config
from gateway.edge.typed import pack, socket_address

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def clusters(config: EdgeConfig) -> list[Cluster]:
    collector = [] if config.otlp_endpoint is None else [otel_collector_cluster(config, config.otlp_endpoint)]
    front = [openai_cluster(config)] if config.openai_endpoints else []
    auth = [auth_cluster(config), *_jwks_clusters(config)] if config.auth_endpoints else []
    return [gateway_cluster(config), *front, *auth, *collector]


def auth_cluster(config: EdgeConfig) -> Cluster:
    cluster = _mesh_service(config, AUTH_CLUSTER, config.auth_endpoints, config.auth_san, "h2")
    cluster.typed_extension_protocol_options = {_HTTP_PROTOCOL_OPTIONS: pack(_http2_only())}
    cluster.health_checks = [_grpc_health_check(config.health_check_interval)]
    return cluster


def _jwks_clusters(config: EdgeConfig) -> list[Cluster]:
    return [_jwks_cluster(config, issuer) for issuer in config.auth.issuers if issuer.jwks_url]


def _jwks_cluster(config: EdgeConfig, issuer: TrustedIssuer) -> Cluster:
    url = urlsplit(issuer.jwks_url)
    host = url.hostname or ""
    cluster = Cluster(
        name=issuer.jwks_cluster,
        type=_discovery_type([(host, 0)]),
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=config.connect_timeout,
        load_assignment=_endpoints(issuer.jwks_cluster, [(host, url.port or (443 if url.scheme == "https" else 80))]),
    )
    if url.scheme == "https":
        # The issuer's certificate is checked against the system's CAs and must name the host.
        validation = CertificateValidationContext(
            trusted_ca=DataSource(filename=str(config.system_ca_bundle)),
            match_typed_subject_alt_names=[
                SubjectAltNameMatcher(san_type=SubjectAltNameMatcherSanType.DNS, matcher=StringMatcher(exact=host))
            ],
        )
        tls = UpstreamTlsContext(sni=host, common_tls_context=CommonTlsContext(validation_context=validation))
        cluster.transport_socket = TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(tls))
    return cluster


def gateway_cluster(config: EdgeConfig) -> Cluster:
    cluster = _mesh_service(config, GATEWAY_CLUSTER, config.gateway_endpoints, config.gateway_san, "h2")
    cluster.typed_extension_protocol_options = {_HTTP_PROTOCOL_OPTIONS: pack(_http2_only())}
    cluster.health_checks = [_grpc_health_check(config.health_check_interval)]
    return cluster


def openai_cluster(config: EdgeConfig) -> Cluster:
    """The OpenAI front: an ASGI server, so HTTP/1.1; its /healthz says whether it reaches a gateway."""
    cluster = _mesh_service(config, OPENAI_CLUSTER, config.openai_endpoints, config.openai_san, "http/1.1")
    cluster.health_checks = [_http_health_check(config.health_check_interval)]
    return cluster


def _mesh_service(config: EdgeConfig, name: str, endpoints: list[HostPort], san: str, alpn: str) -> Cluster:
    """A cluster of mesh service replicas: reached over mTLS, the one identity accepted, failing hosts ejected."""
    return Cluster(
        name=name,
        type=_discovery_type(endpoints),
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=config.connect_timeout,
        load_assignment=_endpoints(name, endpoints),
        transport_socket=_upstream_mtls(config, san, alpn),
        outlier_detection=_outlier_detection(config),
    )


def otel_collector_cluster(config: EdgeConfig, collector: HostPort) -> Cluster:
    """Where Envoy's OpenTelemetry tracer exports spans: OTLP/gRPC, so HTTP/2, in plaintext.

    Plaintext, as collectors (Jaeger's 4317 among them) listen by default. No health checks: a
    collector that is down costs dropped spans, never requests.
    """
    return Cluster(
        name=OTEL_COLLECTOR_CLUSTER,
        type=_discovery_type([collector]),
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=config.connect_timeout,
        load_assignment=_endpoints(OTEL_COLLECTOR_CLUSTER, [collector]),
        typed_extension_protocol_options={_HTTP_PROTOCOL_OPTIONS: pack(_http2_only())},
    )


def _discovery_type(endpoints: list[HostPort]) -> ClusterDiscoveryType:
    # DNS names (a Kubernetes Service, say) are re-resolved; IP literals need no resolver.
    static = all(_is_ip(host) for host, _ in endpoints)
    return ClusterDiscoveryType.STATIC if static else ClusterDiscoveryType.STRICT_DNS


def _endpoints(cluster_name: str, endpoints: list[HostPort]) -> ClusterLoadAssignment:
    hosts = [LbEndpoint(endpoint=Endpoint(address=socket_address(endpoint))) for endpoint in endpoints]
    return ClusterLoadAssignment(cluster_name=cluster_name, endpoints=[LocalityLbEndpoints(lb_endpoints=hosts)])


def _http2_only() -> HttpProtocolOptions:
    # gRPC needs HTTP/2. Pings find a dead connection under a long, quiet stream.
    keepalive = KeepaliveSettings(interval=datetime.timedelta(seconds=30), timeout=datetime.timedelta(seconds=10))
    explicit = HttpProtocolOptionsExplicitHttpConfig(
        http2_protocol_options=Http2ProtocolOptions(connection_keepalive=keepalive)
    )
    return HttpProtocolOptions(explicit_http_config=explicit)


def _upstream_mtls(config: EdgeConfig, san: str, alpn: str) -> TransportSocket:
    # Trust the mesh CA (from SDS), and of its certificates only the one that names the upstream service.
    only_that_service = CertificateValidationContext(
        match_typed_subject_alt_names=[
            SubjectAltNameMatcher(san_type=SubjectAltNameMatcherSanType.URI, matcher=StringMatcher(exact=san))
        ]
    )
    validation = CommonTlsContextCombinedCertificateValidationContext(
        default_validation_context=only_that_service,
        validation_context_sds_secret_config=sds_secret_config(config, MESH_CA_SECRET),
    )
    context = UpstreamTlsContext(
        sni=config.gateway_sni,
        common_tls_context=CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds_secret_config(config, EDGE_CLIENT_SECRET)],
            combined_validation_context=validation,
            alpn_protocols=[alpn],
        ),
    )
    return TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def _grpc_health_check(interval: datetime.timedelta) -> HealthCheck:
    # The empty service name asks for the gateway's overall health.
    return _health_check(interval, grpc_health_check=HealthCheckGrpcHealthCheck(service_name=""))


def _http_health_check(interval: datetime.timedelta) -> HealthCheck:
    return _health_check(interval, http_health_check=HealthCheckHttpHealthCheck(path=HEALTH_PATH))


def _health_check(interval: datetime.timedelta, **check: object) -> HealthCheck:
    return HealthCheck(
        timeout=interval,
        interval=interval,
        # One answer decides either way, so /healthz follows the upstream within about a second.
        unhealthy_threshold=1,
        healthy_threshold=1,
        # Checked at the same pace before the first request too (the default waits 60s between checks).
        no_traffic_interval=interval,
        **check,
    )


def _outlier_detection(config: EdgeConfig) -> OutlierDetection:
    failures = config.outlier_consecutive_failures
    return OutlierDetection(
        # Only failures to reach a gateway (connect errors, resets, timeouts) eject it. gRPC errors it
        # answers with, such as UNAVAILABLE while a model loads or RESOURCE_EXHAUSTED under load, are
        # the mesh speaking honestly, not a sick gateway, so they must not count.
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=failures,
        enforcing_consecutive_local_origin_failure=100,
        enforcing_consecutive_5xx=0,
        enforcing_consecutive_gateway_failure=0,
        base_ejection_time=config.outlier_base_ejection_time,
        # Ejected hosts come back at the next sweep after their ejection time, so sweep as often.
        interval=config.outlier_base_ejection_time,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
