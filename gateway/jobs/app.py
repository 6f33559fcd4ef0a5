"""The job runner's composition root: settings, the store, the gateway client, and the runner's loop.

On SIGTERM it stops its generations and exits; their leases run out and the jobs are claimed again.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.jobs.runner import JobRunner, RunnerTerms
from gateway.jobs.settings import JobRunnerSettings
from gateway.openai.gateway_client import GatewayClient
from services.shared.grpc_server import wait_for_shutdown_signal
from services.shared.service_main import run_service
from services.store.waiting import open_store
from telemetry.metrics import serve_metrics

log = logging.getLogger("gateway.jobs")


def runner_terms(settings: JobRunnerSettings) -> RunnerTerms:
    return RunnerTerms(
        worker=settings.worker,
        concurrency=settings.concurrency,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds,
        max_attempts=settings.max_attempts,
        run_timeout_seconds=settings.run_timeout_seconds,
        retention_seconds=settings.retention_seconds,
    )


async def serve(settings: JobRunnerSettings) -> int:
    database = await open_store(settings.store_url())
    gateway = GatewayClient(settings.gateway, settings.tls_files())
    serve_metrics(settings.metrics_listen)
    runner = asyncio.create_task(JobRunner(database, gateway, runner_terms(settings)).run(), name="job-runner")
    log.info("running jobs from %s as %s, %d at once", database.url, settings.worker, settings.concurrency)
    stop = asyncio.create_task(wait_for_shutdown_signal())
    await asyncio.wait({runner, stop}, return_when=asyncio.FIRST_COMPLETED)
    signalled = stop.done()
    if signalled:
        log.info("stopping on %s", stop.result().name)
    else:
        stop.cancel()
        log.error("the runner stopped by itself: %r", runner.exception())
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await gateway.close()
    await database.close()
    log.info("stopped")
    return 0 if signalled else 1


def main() -> None:
    run_service("jobs", JobRunnerSettings(_cli_parse_args=True), serve)
