"""The OpenAI front's composition root: settings, the gateway client, the ASGI app under uvicorn over mTLS.

Its /healthz is 200 while the gateway says the mesh is SERVING, and Envoy's /healthz follows both.
On SIGTERM it stops taking connections, lets running streams finish within the grace period, and stops.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from gateway.audit import RequestAudit
from gateway.jobs.desk import JobDesk
from gateway.openai.audit import FrontAudit
from gateway.openai.batch_routes import add_batch_routes
from gateway.openai.gateway_client import GatewayClient
from gateway.openai.routes import create_app
from gateway.openai.settings import OpenAISettings
from gateway.openai.transport import EmbeddedServer, follow_certificates, uvicorn_config
from services.shared.audit_log import AuditLog
from services.shared.grpc_server import wait_for_shutdown_signal
from services.shared.service_main import run_service
from services.store.waiting import open_store
from telemetry.metrics import serve_metrics

log = logging.getLogger("gateway.openai")


async def follow_readiness(gateway: GatewayClient, app: FastAPI, interval: float) -> None:
    while True:
        ready = await gateway.ready()
        if ready != app.state.ready:
            log.info("the mesh is %s", "ready" if ready else "not ready")
            app.state.ready = ready
        await asyncio.sleep(interval)


async def serve(settings: OpenAISettings) -> int:
    tls = settings.tls_files()
    gateway = GatewayClient(settings.gateway, tls)
    database = await open_store(settings.store_url())
    audit = AuditLog(database.audit)
    audit.start()
    desk, front_audit = JobDesk(database), FrontAudit(RequestAudit(audit))
    app = create_app(
        gateway,
        settings.request_timeout_seconds,
        front_audit.refused,
        lambda app: add_batch_routes(app, desk, database, front_audit.served),
    )
    # One server span per request, continuing Envoy's trace; no span per chunk sent.
    traced = OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])
    config = uvicorn_config(traced, settings.listen, tls, settings.allowed_callers, settings.shutdown_grace_seconds)
    server = EmbeddedServer(config)
    serving = asyncio.create_task(server.serve())
    readiness = asyncio.create_task(follow_readiness(gateway, app, settings.health_interval_seconds))
    certificates = asyncio.create_task(follow_certificates(config, tls)) if tls is not None else None
    serve_metrics(settings.metrics_listen)
    log.info("listening on %s", settings.listen)
    stop = asyncio.create_task(wait_for_shutdown_signal())
    await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
    if stop.done():
        log.info("stopping on %s", stop.result().name)
    stop.cancel()
    app.state.ready = False
    server.should_exit = True
    readiness.cancel()
    if certificates is not None:
        certificates.cancel()
    await serving
    await audit.close()
    await database.close()
    await gateway.close()
    log.info("stopped")
    return 0 if server.started else 1


def main() -> None:
    run_service("openai", OpenAISettings(_cli_parse_args=True), serve)
