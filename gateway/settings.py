"""The gateway's settings: environment (MESHSERVE_GATEWAY_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.shared.service_settings import StoreServiceSettings


class GatewaySettings(StoreServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_GATEWAY_", cli_prog_name="python -m gateway")

    config: Path = Path("deploy/meshserve.toml")
    listen: str = "127.0.0.1:50041"
    scheduler: str = "127.0.0.1:50051"
    # Whether readiness waits for device readings (a mesh run with a GPU monitor).
    expect_devices: bool = True
    readiness_interval_seconds: float = 0.5
    # The completion window of a job or batch that names none: how long it may wait to start.
    default_completion_window_seconds: int = Field(default=86_400, gt=0)
    # Only the edge calls the gateway, and the OpenAI front behind it, and the job runner.
    allowed_callers: list[str] = ["edge", "openai", "jobs"]
