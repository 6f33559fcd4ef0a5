"""What every meshserve gRPC server shares: the error interceptor, health, reflection, binding and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.shared.authorization import SpiffeAuthorizationInterceptor
from services.shared.error_interceptor import ErrorMappingInterceptor
from services.shared.header_limits import GRPC_METADATA_CEILING_BYTES
from services.shared.service_settings import ServiceSettings
from services.shared.tls import TlsFiles, server_credentials
from telemetry.tracing import tracing_server_interceptor

log = logging.getLogger(__name__)

# Large enough for a prompt that fills a long context, small enough to bound one request's memory.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def create_server(interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> grpc.aio.Server:
    # Tracing wraps everything, so its span sees the final status; the error interceptor wraps the rest,
    # so errors they raise are mapped too.
    return grpc.aio.server(
        interceptors=[tracing_server_interceptor(), ErrorMappingInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Metadata over the mesh's limit is refused by the error interceptor as RESOURCE_EXHAUSTED; these
            # keep grpc's transport (8 KiB soft, 16 KiB hard by default) from failing it first as INTERNAL.
            ("grpc.max_metadata_size", GRPC_METADATA_CEILING_BYTES),
            ("grpc.absolute_max_metadata_size", GRPC_METADATA_CEILING_BYTES),
            # Mesh clients ping idle channels to notice a dead peer (services/shared/channels.py). grpc's
            # default server answers pings more often than every 5 minutes with GOAWAY too_many_pings,
            # which fails every call on that channel; pings once a second are cheap, so allow them.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            # And the server pings its callers: one cut off by the network is noticed within 15 s, and the
            # work it was streaming is cancelled rather than left holding an engine's slot.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            # grpc sets SO_REUSEPORT by default, so a second server (Envoy sets it too) could bind the same
            # port and the kernel would split the callers between them. Off, a taken port fails at start.
            ("grpc.so_reuseport", 0),
        ],
    )


def create_service_server(
    settings: ServiceSettings, reserved: Mapping[str, Sequence[str]] | None = None
) -> grpc.aio.Server:
    """A server that, over mTLS, admits only the callers its settings allow, and to the `reserved` methods
    (full method name to callers) only theirs."""
    if settings.plaintext:
        log.warning("serving plaintext on %s: callers are not authenticated", settings.listen)
        return create_server()
    return create_server([SpiffeAuthorizationInterceptor(settings.allowed_callers, reserved)])


async def add_health_and_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> health.aio.HealthServicer:
    """Registers grpc.health.v1 with every service NOT_SERVING, and server reflection."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, service_names: Sequence[str]) -> None:
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def bind(server: grpc.aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Binds with mTLS, or plaintext when tls is None; returns the port (useful when asked for port 0)."""
    try:
        if tls is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, server_credentials(tls))
    except RuntimeError as error:
        # grpc says only that binding failed; a port another listener holds is by far the likeliest cause.
        raise OSError(f"could not bind {address}: is another server listening there?") from error


async def wait_for_shutdown_signal() -> signal.Signals:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: received.done() or received.set_result(s))
    return await received


async def stop_gracefully(
    server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, grace_seconds: float
) -> None:
    """NOT_SERVING first, so balancers stop sending; then let running calls finish within the grace period."""
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
