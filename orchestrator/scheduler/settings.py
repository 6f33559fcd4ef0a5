"""The scheduler's settings: environment (MESHSERVE_SCHEDULER_*) and command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from orchestrator.scheduler.core.devices import PressurePolicy
from orchestrator.scheduler.core.pressure import (
    DEFAULT_POLICIES,
    LevelPolicy,
    ModelsAdmitted,
    PressureLevel,
    PressureThresholds,
    ThermalThresholds,
)
from services.shared.domain import Priority
from services.shared.liveness import SILENT_AFTER_INTERVALS
from services.shared.service_settings import ServiceSettings


class LevelPolicySetting(BaseModel):
    """One level's policy, replacing DESIGN.md's default for that level."""

    model_config = ConfigDict(extra="forbid")

    models: Literal["all", "those_that_fit", "smallest_only", "none"]
    # The share of an engine's slots that may run (at least one while any work starts), and a hard cap.
    concurrency_share: float = Field(ge=0.0, le=1.0)
    max_concurrency: int | None = Field(default=None, ge=0)
    # The least urgent priority that may start; None starts nothing.
    lowest_priority: Literal["LOW", "NORMAL", "HIGH", "CRITICAL"] | None

    def to_policy(self) -> LevelPolicy:
        lowest = Priority[self.lowest_priority] if self.lowest_priority else None
        return LevelPolicy(ModelsAdmitted[self.models.upper()], self.concurrency_share, self.max_concurrency, lowest)


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESHSERVE_SCHEDULER_", cli_prog_name="python -m orchestrator.scheduler"
    )

    config: Path = Path("deploy/meshserve.toml")
    listen: str = "127.0.0.1:50051"
    # Inference endpoints as MODEL=HOST:PORT, one flag each, for endpoints that do not register themselves.
    endpoints: list[str] = []
    # Every node's GPU monitor as HOST:PORT, or dns:NAME:PORT for every address NAME resolves to (resolved
    # again every 2 s, so nodes come and go), one flag each; none means no device readings.
    monitor: list[str] = []
    # How often registered endpoints beat and monitors read; three intervals of silence and the endpoint
    # is dropped (its held slots lost), or the monitor's devices get no new work, until it is heard again.
    heartbeat_seconds: float = Field(default=0.5, gt=0, le=10)
    monitor_interval_seconds: float = Field(default=0.5, ge=0.05, le=10)
    silent_after_intervals: int = Field(default=SILENT_AFTER_INTERVALS, ge=2, le=20)
    # Requests that may wait at once; past it a request is refused (or sheds a less urgent one).
    max_queue: int = Field(default=64, ge=0)
    # At most this much of a device is reserved for models and requests ("2GiB", "1500MB"); unset: all of it.
    memory_budget: ByteSize | None = None
    # Used-memory fractions where NORMAL, HIGH, CRITICAL and EMERGENCY begin, and the margin a level must
    # fall below its start before it is left.
    pressure_boundaries: tuple[float, float, float, float] = (0.50, 0.70, 0.85, 0.95)
    pressure_hysteresis: float = 0.03
    # Degrees Celsius where load is reduced, new work paused, and admission stopped.
    thermal_celsius: tuple[float, float, float] = (65.0, 80.0, 85.0)
    # Replaces the default policy of the levels named, as JSON: '{"HIGH": {"models": "those_that_fit",
    # "concurrency_share": 1.0, "max_concurrency": 4, "lowest_priority": "LOW"}}'.
    level_policies: dict[Literal["LOW", "NORMAL", "HIGH", "CRITICAL", "EMERGENCY"], LevelPolicySetting] = {}
    # LOW work is background work: it starts only on a device where nothing more urgent runs or waits, and
    # more urgent work recalls it. False lets it share the device, as a GPU batching many sequences can.
    background_yields: bool = True
    # How long a device stays in EMERGENCY after an engine on it ran out of memory.
    oom_recovery_seconds: float = Field(default=10.0, gt=0)
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

    @field_validator("monitor")
    @classmethod
    def _monitor_is_an_address(cls, monitors: list[str]) -> list[str]:
        for monitor in monitors:
            host, _, port = monitor.removeprefix("dns:").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"monitor {monitor!r} must look like HOST:PORT or dns:NAME:PORT")
        return monitors

    @model_validator(mode="after")
    def _policy_is_consistent(self) -> SchedulerSettings:
        if list(self.thermal_celsius) != sorted(set(self.thermal_celsius)):
            raise ValueError("thermal_celsius must rise: reduce < pause < stop")
        self.pressure_policy()  # raises on boundaries that do not rise within (0, 1]
        return self

    def endpoint_addresses(self) -> list[tuple[str, str]]:
        return [tuple(endpoint.split("=", 1)) for endpoint in self.endpoints]  # type: ignore[misc]

    def pressure_policy(self) -> PressurePolicy:
        normal, high, critical, emergency = self.pressure_boundaries
        reduce, pause, stop = self.thermal_celsius
        policies = dict(DEFAULT_POLICIES)
        for level, setting in self.level_policies.items():
            policies[PressureLevel[level]] = setting.to_policy()
        return PressurePolicy(
            thresholds=PressureThresholds(normal, high, critical, emergency, self.pressure_hysteresis, policies),
            thermal=ThermalThresholds(reduce, pause, stop),
            budget_bytes=int(self.memory_budget) if self.memory_budget is not None else None,
            oom_recovery_seconds=self.oom_recovery_seconds,
        )
