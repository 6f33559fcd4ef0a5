"""The job runner's settings: environment (MESHSERVE_JOBS_*) and command-line flags."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.shared.service_settings import StoreServiceSettings


class JobRunnerSettings(StoreServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_JOBS_", cli_prog_name="python -m gateway.jobs")

    # The gateway the runner generates through, as the mesh identity "jobs"; replicas as a comma-separated
    # list of IP:PORT, which the runner's calls are spread over.
    gateway: str = "127.0.0.1:50041"
    # Names this runner's leases in the store; unique per process, so a restarted runner is a new worker.
    worker: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = Field(default=4, ge=1, le=1024)
    lease_seconds: float = Field(default=15.0, gt=0)
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    poll_seconds: float = Field(default=0.2, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    run_timeout_seconds: float = Field(default=600.0, gt=0)
    retention_seconds: float = Field(default=86_400.0, gt=0)
