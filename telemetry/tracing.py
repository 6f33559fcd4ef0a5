"""Tracing for every service: OTLP/gRPC export, W3C propagation, driven by the standard OTEL_* variables.

The exporter, the sampler (OTEL_TRACES_SAMPLER) and the batch processor (OTEL_BSP_*) read their own
variables; with no endpoint configured, tracing stays off and costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TracingSettings:
    """What the standard variables say about whether traces leave the process at all."""

    otlp_endpoint: str = ""
    sdk_disabled: bool = False
    traces_exporter: str = "otlp"

    @property
    def enabled(self) -> bool:
        return bool(self.otlp_endpoint) and not self.sdk_disabled and self.traces_exporter != "none"


def configure_tracing(service_name: str, settings: TracingSettings) -> Callable[[], None]:
    """Installs the tracer provider; returns the function that flushes and stops it at shutdown."""
    if not settings.enabled:
        log.info("tracing is off: no OTEL_EXPORTER_OTLP_ENDPOINT")
        return lambda: None
    # The service's own name wins over OTEL_SERVICE_NAME, which one environment may set for every service.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("exporting traces to %s", settings.otlp_endpoint)
    return provider.shutdown


def tracing_server_interceptor():
    """The OpenTelemetry gRPC server interceptor, minus health checks and reflection, which are noise."""
    probes = any_of(service_prefix("grpc.health."), service_prefix("grpc.reflection."))
    return aio_server_interceptor(filter_=negate(probes))
