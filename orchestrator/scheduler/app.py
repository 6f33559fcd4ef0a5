"""The scheduler's composition root."""

from __future__ import annotations

import asyncio
import logging

from meshserve.scheduler.v1 import scheduler_pb2_grpc
from prometheus_client import REGISTRY

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import EndpointSpec
from orchestrator.scheduler.core.scheduler import SlotScheduler
from orchestrator.scheduler.device_watcher import DeviceWatcher
from orchestrator.scheduler.endpoint_watcher import EndpointWatcher
from orchestrator.scheduler.metrics import SchedulerStateCollector
from orchestrator.scheduler.residency import ResidencyKeeper
from orchestrator.scheduler.servicer import SERVICE_NAME, SchedulerServicer
from orchestrator.scheduler.settings import SchedulerSettings
from orchestrator.scheduler.state_report import StateReporter
from services.shared.grpc_server import (
    add_health_and_reflection,
    bind,
    create_service_server,
    set_serving,
    stop_gracefully,
    wait_for_shutdown_signal,
)
from services.shared.mesh_config import load_mesh_config
from services.shared.service_main import run_service
from telemetry.metrics import serve_metrics

log = logging.getLogger("orchestrator.scheduler")


def endpoint_specs(settings: SchedulerSettings) -> list[EndpointSpec]:
    mesh = load_mesh_config(settings.config)
    specs = []
    for model, address in settings.endpoint_addresses():
        config = mesh.model(model)
        keep_alive = config.keep_alive_seconds if config.keep_alive_seconds >= 0 else None
        specs.append(EndpointSpec(f"{model}@{address}", model, address, config.slots, config.device, keep_alive))
    return specs


async def serve(settings: SchedulerSettings) -> int:
    specs = endpoint_specs(settings)
    core = SlotScheduler(
        specs,
        settings.max_queue,
        start_available=False,
        pressure=settings.pressure_policy(),
        background_yields=settings.background_yields,
    )
    broker = SlotBroker(core)
    tls = settings.tls_files()
    broker.send_unloads_to(ResidencyKeeper(broker, specs, tls).unload)
    endpoints = EndpointWatcher(broker, specs, tls)
    devices = DeviceWatcher(broker, settings.monitor, tls) if settings.monitor else None

    reporter = StateReporter(broker, endpoints, devices)
    REGISTRY.register(SchedulerStateCollector(reporter))
    server = create_service_server(settings)
    servicer = SchedulerServicer(broker, reporter)
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, server)
    health = await add_health_and_reflection(server, [SERVICE_NAME])
    bind(server, settings.listen, tls)
    await server.start()
    serve_metrics(settings.metrics_listen)
    watchers = [asyncio.create_task(endpoints.run()), asyncio.create_task(broker.tick_forever())]
    if devices is not None:
        watchers.append(asyncio.create_task(devices.run()))
    await set_serving(health, [SERVICE_NAME])
    log.info("listening on %s with %d endpoints", settings.listen, len(specs))
    log.info("stopping on %s", (await wait_for_shutdown_signal()).name)
    await stop_gracefully(server, health, settings.shutdown_grace_seconds)
    for watcher in watchers:
        watcher.cancel()
    log.info("stopped")
    return 0


def main() -> None:
    run_service("scheduler", SchedulerSettings(_cli_parse_args=True), serve)
