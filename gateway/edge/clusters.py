"""The edge's clusters.

- gateway: mTLS over HTTP/2 to every gateway replica, with health checks and ejection.
- otel_collector (only with tracing on): plaintext HTTP/2 to the OTLP/gRPC collector.
"""

from __future__ import annotations

import datetime
import ipaddress

from envoy_data_plane.envoy.config.cluster.v3 import (
    Cluster,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    HealthCheck,
    HealthCheckGrpcHealthCheck,
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

from gateway.edge.config import GATEWAY_CLUSTER, OTEL_COLLECTOR_CLUSTER, EdgeConfig, HostPort
from gateway.edge.secrets import EDGE_CLIENT_SECRET, MESH_CA_SECRET, sds_secret_config
from gateway.edge.typed import pack, socket_address

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def clusters(config: EdgeConfig) -> list[Cluster]:
    collector = [] if config.otlp_endpoint is None else [otel_collector_cluster(config, config.otlp_endpoint)]
    return [gateway_cluster(config), *collector]


def gateway_cluster(config: EdgeConfig) -> Cluster:
    return Cluster(
        name=GATEWAY_CLUSTER,
        type=_discovery_type(config.gateway_endpoints),
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=config.connect_timeout,
        load_assignment=_endpoints(GATEWAY_CLUSTER, config.gateway_endpoints),
        typed_extension_protocol_options={_HTTP_PROTOCOL_OPTIONS: pack(_http2_only())},
        transport_socket=_upstream_mtls(config),
        health_checks=[_grpc_health_check(config.health_check_interval)],
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


def _upstream_mtls(config: EdgeConfig) -> TransportSocket:
    # Trust the mesh CA (from SDS), and of its certificates only the one that names the gateway.
    only_the_gateway = CertificateValidationContext(
        match_typed_subject_alt_names=[
            SubjectAltNameMatcher(
                san_type=SubjectAltNameMatcherSanType.URI, matcher=StringMatcher(exact=config.gateway_san)
            )
        ]
    )
    validation = CommonTlsContextCombinedCertificateValidationContext(
        default_validation_context=only_the_gateway,
        validation_context_sds_secret_config=sds_secret_config(config, MESH_CA_SECRET),
    )
    context = UpstreamTlsContext(
        sni=config.gateway_sni,
        common_tls_context=CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds_secret_config(config, EDGE_CLIENT_SECRET)],
            combined_validation_context=validation,
            alpn_protocols=["h2"],
        ),
    )
    return TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def _grpc_health_check(interval: datetime.timedelta) -> HealthCheck:
    return HealthCheck(
        timeout=interval,
        interval=interval,
        # One answer decides either way, so /healthz follows the gateway within about a second.
        unhealthy_threshold=1,
        healthy_threshold=1,
        # Checked at the same pace before the first request too (the default waits 60s between checks).
        no_traffic_interval=interval,
        # The empty service name asks for the gateway's overall health.
        grpc_health_check=HealthCheckGrpcHealthCheck(service_name=""),
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
