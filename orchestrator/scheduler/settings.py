"""The scheduler's settings: environment (MESHSERVE_SCHEDULER_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.shared.service_settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESHSERVE_SCHEDULER_", cli_prog_name="python -m orchestrator.scheduler"
    )

    config: Path = Path("deploy/meshserve.toml")
    listen: str = "127.0.0.1:50051"
    # Inference endpoints as MODEL=HOST:PORT, one flag each.
    endpoints: list[str] = []
    # The node's GPU monitor as HOST:PORT; empty means no device readings.
    monitor: str = ""
    # Requests that may wait at once; past it a request is refused (or sheds a less urgent one).
    max_queue: int = Field(default=64, ge=0)
    # The gateway asks for slots; the command-line client reads the state.
    allowed_callers: list[str] = ["gateway", "cli"]

    @field_validator("endpoints")
    @classmethod
    def _model_equals_address(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            model, _, address = endpoint.partition("=")
            if not model or ":" not in address:
                raise ValueError(f"endpoint {endpoint!r} must look like MODEL=HOST:PORT")
        return endpoints

    def endpoint_addresses(self) -> list[tuple[str, str]]:
        return [tuple(endpoint.split("=", 1)) for endpoint in self.endpoints]  # type: ignore[misc]
