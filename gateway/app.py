"""The gateway's composition root.

The gateway's health is the mesh's readiness: SERVING while the scheduler answers, every model has an
inference endpoint that serves, and a GPU monitor reports. Envoy's /healthz follows it.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2
from meshserve.gateway.v1 import gateway_pb2_grpc
from meshserve.jobs.v1 import jobs_pb2_grpc

from gateway.audit import RequestAudit
from gateway.clients import InferenceClients, SchedulerClient
from gateway.core.service import GatewayCore
from gateway.jobs.desk import DeskTerms, JobDesk
from gateway.jobs.servicer import SERVICE_NAME as JOBS_SERVICE_NAME
from gateway.jobs.servicer import JobsServicer
from gateway.servicer import SERVICE_NAME, GatewayServicer
from gateway.settings import GatewaySettings
from gateway.status import mesh_is_ready
from services.shared.audit_log import AuditLog
from services.shared.errors import MeshError
from services.shared.grpc_server import (
    add_health_and_reflection,
    bind,
    create_service_server,
    stop_gracefully,
    wait_for_shutdown_signal,
)
from services.shared.mesh_config import load_mesh_config
from services.shared.service_main import run_service
from services.store.waiting import open_store
from telemetry.metrics import serve_metrics

log = logging.getLogger("gateway")


async def follow_readiness(
    scheduler: SchedulerClient, health_servicer: health.aio.HealthServicer, settings: GatewaySettings, models: list[str]
) -> None:
    ready: bool | None = None
    while True:
        try:
            now_ready = mesh_is_ready(await scheduler.state(timeout=2.0), settings.expect_devices, models)
        except MeshError:
            now_ready = False
        if now_ready != ready:
            status = health_pb2.HealthCheckResponse.SERVING if now_ready else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, status)
            log.info("mesh is %s", "ready" if now_ready else "not ready")
            ready = now_ready
        await asyncio.sleep(settings.readiness_interval_seconds)


async def serve(settings: GatewaySettings) -> int:
    mesh = load_mesh_config(settings.config)
    tls = settings.tls_files()
    scheduler = SchedulerClient(settings.scheduler, tls)
    inference = InferenceClients(tls)
    core = GatewayCore([model.name for model in mesh.models], scheduler, inference)
    # Where the audit log goes; the gateway waits for the store, as nothing it serves goes unaudited.
    database = await open_store(settings.store_url())
    audit = AuditLog(database.audit)
    audit.start()

    server = create_service_server(settings)
    request_audit = RequestAudit(audit)
    servicer = GatewayServicer(core, scheduler, mesh, request_audit)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    desk = JobDesk(database, DeskTerms(settings.default_completion_window_seconds))
    jobs_pb2_grpc.add_JobsServiceServicer_to_server(JobsServicer(desk, core, request_audit), server)
    health_servicer = await add_health_and_reflection(server, [SERVICE_NAME, JOBS_SERVICE_NAME])
    bind(server, settings.listen, tls)
    await server.start()
    serve_metrics(settings.metrics_listen)
    readiness = asyncio.create_task(
        follow_readiness(scheduler, health_servicer, settings, [model.name for model in mesh.models])
    )
    log.info("listening on %s", settings.listen)
    log.info("stopping on %s", (await wait_for_shutdown_signal()).name)
    readiness.cancel()
    await stop_gracefully(server, health_servicer, settings.shutdown_grace_seconds)
    await audit.close()
    await database.close()
    await inference.close()
    await scheduler.close()
    log.info("stopped")
    return 0


def main() -> None:
    run_service("gateway", GatewaySettings(_cli_parse_args=True), serve)
