"""The scheduler's composition root."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from meshserve.scheduler.v1 import scheduler_pb2_grpc
from prometheus_client import REGISTRY

from orchestrator.scheduler.broker import SlotBroker
from orchestrator.scheduler.core.model import EndpointSpec
from orchestrator.scheduler.core.scheduler import SlotScheduler
from orchestrator.scheduler.device_watcher import DeviceWatcher
from orchestrator.scheduler.endpoint_watcher import EndpointWatcher
from orchestrator.scheduler.metrics import SchedulerStateCollector
from orchestrator.scheduler.monitors import MonitorDirectory
from orchestrator.scheduler.registry import EndpointRegistry
from orchestrator.scheduler.residency import ResidencyKeeper
from orchestrator.scheduler.servicer import REGISTER_ENDPOINT, SERVICE_NAME, SchedulerServicer
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
from services.shared.mesh_config import MeshConfig, load_mesh_config
from services.shared.service_main import run_service
from telemetry.metrics import serve_metrics

log = logging.getLogger("orchestrator.scheduler")


def keep_alive_lookup(mesh: MeshConfig) -> Callable[[str], float | None]:
    """How long each model stays loaded when idle, from the mesh config; None (always) for models it lacks."""

    def keep_alive_of(model: str) -> float | None:
        config = next((config for config in mesh.models if config.name == model), None)
        return config.keep_alive_seconds if config is not None and config.keep_alive_seconds >= 0 else None

    return keep_alive_of


def endpoint_specs(settings: SchedulerSettings, mesh: MeshConfig) -> list[EndpointSpec]:
    """The endpoints given by flag, which do not register themselves."""
    keep_alive_of = keep_alive_lookup(mesh)
    specs = []
    for model, address in settings.endpoint_addresses():
        config = mesh.model(model)
        specs.append(
            EndpointSpec(f"{model}@{address}", model, address, config.slots, config.device, keep_alive_of(model))
        )
    return specs


async def serve(settings: SchedulerSettings) -> int:
    mesh = load_mesh_config(settings.config)
    specs = endpoint_specs(settings, mesh)
    core = SlotScheduler(
        specs,
        settings.max_queue,
        start_available=False,
        pressure=settings.pressure_policy(),
        background_yields=settings.background_yields,
        models=[model.name for model in mesh.models],
    )
    broker = SlotBroker(core)
    tls = settings.tls_files()
    endpoints = EndpointWatcher(broker, tls)
    broker.send_unloads_to(ResidencyKeeper(broker, endpoints.address_of, tls).unload)
    registry = EndpointRegistry(
        broker, endpoints, keep_alive_lookup(mesh), settings.heartbeat_seconds, settings.silent_after_intervals
    )
    monitors = MonitorDirectory(
        broker,
        settings.monitor,
        tls,
        lambda address: DeviceWatcher(
            broker, address, tls, settings.monitor_interval_seconds, settings.silent_after_intervals
        ),
    )

    reporter = StateReporter(broker, endpoints, monitors)
    REGISTRY.register(SchedulerStateCollector(reporter))
    server = create_service_server(settings, reserved={REGISTER_ENDPOINT: ["inference"]})
    servicer = SchedulerServicer(broker, reporter, registry)
    scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, server)
    health = await add_health_and_reflection(server, [SERVICE_NAME])
    bind(server, settings.listen, tls)
    await server.start()
    serve_metrics(settings.metrics_listen)
    for spec in specs:
        endpoints.follow(spec)
    background = [asyncio.create_task(monitors.run()), asyncio.create_task(broker.tick_forever())]
    await set_serving(health, [SERVICE_NAME])
    log.info("listening on %s with %d endpoints given, more as they register", settings.listen, len(specs))
    log.info("stopping on %s", (await wait_for_shutdown_signal()).name)
    await stop_gracefully(server, health, settings.shutdown_grace_seconds)
    for task in background:
        task.cancel()
    monitors.stop()
    endpoints.stop()
    log.info("stopped")
    return 0


def main() -> None:
    run_service("scheduler", SchedulerSettings(_cli_parse_args=True), serve)
