"""The GPU monitor's composition root: settings in, source chosen, core and server built, run until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from meshserve.gpumonitor.v1 import gpumonitor_pb2_grpc

from services.gpu_monitor.core.host_source import HostMemorySource
from services.gpu_monitor.core.monitor import GpuMonitorCore
from services.gpu_monitor.core.nvml_source import NvmlSource
from services.gpu_monitor.core.replay_source import ReplaySource
from services.gpu_monitor.core.sources import SelectedSource, SourceMode, SourceUnavailableError, select_source
from services.gpu_monitor.metrics import keep_recording
from services.gpu_monitor.servicer import SERVICE_NAME, GpuMonitorServicer
from services.gpu_monitor.settings import GpuMonitorSettings
from services.shared.grpc_server import (
    add_health_and_reflection,
    bind,
    create_service_server,
    set_serving,
    stop_gracefully,
    wait_for_shutdown_signal,
)
from services.shared.service_main import run_service
from telemetry.metrics import serve_metrics

log = logging.getLogger("services.gpu_monitor")


def start_source(mode: SourceMode, node_name: str, replay_file: Path | None = None) -> SelectedSource:
    """Blocking: NVML initialisation can take seconds on a node with many GPUs."""
    replay = (lambda: ReplaySource(node_name, replay_file)) if replay_file is not None else None
    return select_source(mode, lambda: NvmlSource(node_name), lambda: HostMemorySource(node_name), replay)


async def serve(settings: GpuMonitorSettings) -> int:
    core = GpuMonitorCore(settings.node_name, settings.interval_seconds)
    server = create_service_server(settings)
    gpumonitor_pb2_grpc.add_GpuMonitorServiceServicer_to_server(GpuMonitorServicer(core), server)
    health = await add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, settings.listen, settings.tls_files())
    await server.start()
    serve_metrics(settings.metrics_listen)
    log.info("listening on %s (port %d), starting the %s source", settings.listen, port, settings.source)

    # The server answers health checks (NOT_SERVING) and refuses readings while the source starts.
    starting = asyncio.create_task(
        asyncio.to_thread(start_source, settings.source_mode(), settings.node_name, settings.replay_file)
    )
    signalled = asyncio.create_task(wait_for_shutdown_signal())
    done, _ = await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if starting in done:
        error = starting.exception()
        if error is not None:
            # An unavailable source is an operator's matter (its message says why); anything else is a bug.
            expected = isinstance(error, SourceUnavailableError)
            log.error("could not start the reading source: %s", error, exc_info=None if expected else error)
            signalled.cancel()
            exit_code = 1
        else:
            selected = starting.result()
            core.mark_ready(selected.source)
            recording = asyncio.create_task(keep_recording(core))
            await set_serving(health, [SERVICE_NAME])
            log.info("reading %s: %s; SERVING", selected.source.kind.value, selected.reason)
            log.info("stopping on %s", (await signalled).name)
            recording.cancel()
    core.mark_stopping()
    await stop_gracefully(server, health, settings.shutdown_grace_seconds)
    await _close_source(starting)
    log.info("stopped")
    return exit_code


async def _close_source(starting: asyncio.Task[SelectedSource]) -> None:
    if not starting.done():
        # A signal came while the source was starting: let it finish, so it can be released.
        await asyncio.wait({starting})
    if starting.exception() is None:
        await asyncio.to_thread(starting.result().source.close)


def main() -> None:
    run_service("gpu-monitor", GpuMonitorSettings(_cli_parse_args=True), serve)
