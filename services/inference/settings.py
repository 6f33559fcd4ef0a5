"""The inference service's settings: environment (MESHSERVE_INFERENCE_*) and command-line flags."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.shared.service_settings import NodeName, ServiceSettings


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSERVE_INFERENCE_", cli_prog_name="python -m services.inference")

    # The mesh config file, and which of its models this service runs (empty: the first).
    config: Path = Path("deploy/meshserve.toml")
    model: str = ""
    listen: str = "127.0.0.1:50061"
    # The gateway calls Generate; the scheduler reads GetModelInfo and unloads idle models.
    allowed_callers: list[str] = ["gateway", "scheduler"]
    # Prompts and completions go into traces only when an operator opts in: they may hold personal data.
    trace_content: bool = False
    # The scheduler to register with, as HOST:PORT; empty when the scheduler is given this endpoint by flag.
    scheduler: str = ""
    # The HOST:PORT the gateway and scheduler reach this endpoint at (a pod's IP on Kubernetes); empty: the
    # listen address, which must then name a host rather than 0.0.0.0.
    advertise: str = ""
    # The node, named as its GPU monitor names it (both default to the host name), so the scheduler puts
    # this endpoint on that node's device.
    node_name: NodeName = Field(default_factory=socket.gethostname)

    @model_validator(mode="after")
    def _reachable_when_registering(self) -> InferenceSettings:
        host = self.advertised_address().rpartition(":")[0]
        if self.scheduler and host in ("", "0.0.0.0", "[::]", "::"):
            raise ValueError("an endpoint that registers must advertise an address others can reach (--advertise)")
        return self

    def advertised_address(self) -> str:
        return self.advertise or self.listen
