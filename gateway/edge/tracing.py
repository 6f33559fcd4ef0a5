"""Tracing at the edge: Envoy starts every request's trace with the OpenTelemetry tracer.

The edge samples (every request), and each service behind it follows its parent's decision. Envoy
makes a SERVER span for the client's request and, with spawn_upstream_span, a CLIENT span for its
call to the gateway; the W3C traceparent it sends upstream names that CLIENT span as the parent. The
spans go by OTLP/gRPC to the collector through the otel_collector cluster (see clusters.py).

Without config.otlp_endpoint there is no tracing, and nothing about it in the bootstrap.
"""

from __future__ import annotations

import datetime

from envoy_data_plane.envoy.config.bootstrap.v3 import LayeredRuntime, RuntimeLayer
from envoy_data_plane.envoy.config.core.v3 import GrpcService, GrpcServiceEnvoyGrpc
from envoy_data_plane.envoy.config.trace.v3 import OpenTelemetryConfig, TracingHttp
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManagerTracing,
)
from envoy_data_plane.envoy.type.v3 import Percent
from envoy_data_plane.google.protobuf import Struct

from gateway.edge.config import OTEL_COLLECTOR_CLUSTER, EdgeConfig
from gateway.edge.typed import pack

OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
# The resource's service.name on every span Envoy exports.
ENVOY_SERVICE_NAME = "envoy"
# The OpenTelemetry tracer reads its batching from these runtime keys only; it has no config fields.
FLUSH_INTERVAL_KEY = "tracing.opentelemetry.flush_interval_ms"
MIN_FLUSH_SPANS_KEY = "tracing.opentelemetry.min_flush_spans"
_EXPORT_TIMEOUT = datetime.timedelta(seconds=5)


def http_tracing(config: EdgeConfig) -> HttpConnectionManagerTracing | None:
    """The HttpConnectionManager's tracing, or None when the edge has no collector."""
    if config.otlp_endpoint is None:
        return None
    tracer = OpenTelemetryConfig(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=OTEL_COLLECTOR_CLUSTER), timeout=_EXPORT_TIMEOUT
        ),
        service_name=ENVOY_SERVICE_NAME,
    )
    return HttpConnectionManagerTracing(
        provider=TracingHttp(name=OPENTELEMETRY_TRACER, typed_config=pack(tracer)),
        # The mesh samples here, once; a request that arrives with a traceparent keeps its caller's decision.
        random_sampling=Percent(value=100.0),
        # The edge is a hop of its own: its call to the gateway is a span, the gateway's parent.
        spawn_upstream_span=True,
    )


def tracing_runtime(config: EdgeConfig) -> LayeredRuntime | None:
    """A static runtime layer with the tracer's batching, or None when the edge has no collector.

    Envoy sends a worker's spans once it holds MIN_FLUSH_SPANS_KEY of them, and whatever it holds every
    FLUSH_INTERVAL_KEY milliseconds.
    """
    if config.otlp_endpoint is None:
        return None
    flush_interval_ms = max(1, round(config.trace_flush_interval / datetime.timedelta(milliseconds=1)))
    values = {FLUSH_INTERVAL_KEY: flush_interval_ms, MIN_FLUSH_SPANS_KEY: config.trace_min_flush_spans}
    return LayeredRuntime(layers=[RuntimeLayer(name="edge_tracing", static_layer=Struct.from_dict(values))])
